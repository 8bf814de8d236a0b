//! netfw: the runtime of the LVS-style Direct Routing forwarder on dedicated NICs.
//!
//! - `io`: NIC I/O behind the `Port` traits; AF_PACKET with PACKET_MMAP rings.
//! - `stack`: the smoltcp control stack that owns the director's addresses on each NIC.
//! - `pair`: the HA pair: the election, this box's adverts, the role every worker follows.
//! - `flow_sync`: the master's flow table streamed to the backup, and taken by a returning box.
//! - `health`: health probes from the DIP (through the DR path or to the RIP) and their verdicts.
//! - `pump`: one turn of the poll loop: frames in, decided by the core, frames out; every
//!   frame that cannot be sent is counted.
//! - `reload`: a new config is read, checked and built on its own thread, then installed.
//! - `ctl`: the control socket (typed requests and answers, `director-messages`).
//! - `status`: the forwarder's tables as the status document.
//! - `connections`: the connection list (flows and persistence templates).
//! - `run`: `netfw run`: open the NICs, then forward until told to stop.
//! - `watch`: `netfw ipvs watch`: ipvs mode's health checker (the same probes, verdicts to IPVS)
//!   and, in a pair, its election (`ipvs_pair`).
//! - `capture`: packet capture for the operator (filters, bounds, pcap; the kernel engine).
//! - `cli`, `ipvs_cli`: the `netfw` command.
//!
//! The per-frame decision lives in `netfw-core` (no_std); the config document in
//! `director-config`; IPVS and rtnetlink in `netfw-kernel`.

pub mod capture;
pub mod cli;
pub mod connections;
pub mod ctl;
pub mod flow_sync;
pub mod health;
pub mod io;
pub mod ipvs_cli;
pub mod ipvs_pair;
pub mod pair;
pub mod pump;
pub mod reload;
pub mod run;
pub mod stack;
pub mod status;
#[cfg(test)]
mod testing;
pub mod watch;
pub mod workers;
