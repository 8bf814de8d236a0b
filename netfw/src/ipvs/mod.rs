//! IPVS mode: the same config programmed into the kernel's IPVS over generic netlink (family
//! "IPVS", `include/uapi/linux/ip_vs.h`), with no ipvsadm binary.
//!
//! - `nl`: netlink framing and attributes, as typed builders and a bounds-checked parser.
//! - `kernel`: the IPVS family: list, add, change and delete services and destinations.
//! - `reconcile`: the difference between what the kernel has and what the config wants, as a
//!   list of changes (never a flush: connections to real servers that stay are untouched, a
//!   weight change is a weight change).
//! - `director`: the director's own network side in this mode (addresses, ARP and IPVS
//!   sysctls).
//! - `report`: the kernel's table and counters as the same status report the forwarder gives.

pub mod cli;
pub mod director;
pub mod ipvsadm;
pub mod kernel;
pub mod nl;
pub mod reconcile;
pub mod report;
