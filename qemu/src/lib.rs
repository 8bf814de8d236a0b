//! The lab: network namespaces, veths and bridges that surround the director, built with
//! iproute2, with only the documentation/benchmark address ranges of DESIGN.md, torn down on
//! drop. Used by the end-to-end tests, the demo and the benchmarks.

pub mod lab;
pub mod proc;

pub use lab::{Lab, LabError, Layout};
