//! The lab: network namespaces, veths and bridges that surround the director, built with
//! iproute2, with only the documentation/benchmark address ranges of DESIGN.md, torn down on
//! drop. Used by the end-to-end tests, the demo and the benchmarks.

pub mod lab;
pub mod netns;
pub mod proc;
pub mod vm;

pub use lab::{Lab, LabError, Layout};

/// The line the appliance's init prints when it is up (appliance::init::READY_MARKER).
pub const READY_MARKER: &str = "director: ready";
