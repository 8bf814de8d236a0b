//! netfw: an LVS-style Direct Routing (DR) forwarder.
//!
//! The data-plane core (`wire`, `flow`, `sched`, `forward`, `neigh`, `counters`) is `no_std`
//! with `alloc`: tables are sized once when a config is applied, never per packet. The parts
//! that need an operating system (NIC rings, the smoltcp control stack, config files, the
//! control socket, the CLI) are behind the default `std` feature.
#![cfg_attr(not(feature = "std"), no_std)]

extern crate alloc;

pub mod counters;
pub mod flow;
pub mod forward;
pub mod model;
pub mod neigh;
pub mod sched;
pub mod time;
pub mod wire;

#[cfg(feature = "std")]
pub mod cli;
#[cfg(feature = "std")]
pub mod config;
#[cfg(feature = "std")]
pub mod ctl;
#[cfg(feature = "std")]
pub mod io;
#[cfg(feature = "std")]
pub mod ipvs;
#[cfg(feature = "std")]
pub mod netconf;
#[cfg(feature = "std")]
pub mod run;
#[cfg(feature = "std")]
pub mod stack;
#[cfg(feature = "std")]
pub mod status;
#[cfg(feature = "std")]
pub mod store;
