//! netfw-core: the data plane of the LVS-style Direct Routing forwarder, with no operating
//! system underneath (`no_std` + `alloc`).
//!
//! - `wire`: typed, bounds-checked views over received frames, and the ARP frames we send.
//! - `flow`: the fixed-capacity flow table (and the map under it), TCP state from the
//!   client's flags.
//! - `sched`: rr, wrr, lc, wlc, sh, mh.
//! - `forward`: the decision per frame (forward, control stack, drop with a reason).
//! - `health`: real servers' up/down state machine (rise, fall), fed with probe results.
//! - `ha`: the HA pair's VRRPv3 adverts (authenticated) and the election of the master.
//! - `neigh`: real servers' MACs, resolved from the DIP.
//! - `counters`: every drop has a reason, every reason a counter.
//! - `model`: the validated configuration as the data plane sees it.
//! - `time`: milliseconds, passed in by the caller (tests use a fake clock).
//!
//! Tables are sized when a configuration is installed, never per packet. The runtime (NIC
//! rings, the smoltcp control stack, sockets) lives in the `netfw` crate.
#![cfg_attr(not(test), no_std)]
#![deny(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_possible_wrap)]

extern crate alloc;

pub mod counters;
pub mod flow;
pub mod forward;
pub mod ha;
pub mod health;
pub mod model;
pub mod neigh;
pub mod sched;
pub mod time;
pub mod wire;
