//! netfw-kernel: everything the director asks of the Linux kernel itself.
//!
//! - `genl`: generic netlink framing, typed builders and a bounds-checked attribute parser.
//! - `ipvs`: the IPVS family (`include/uapi/linux/ip_vs.h`): services and real servers.
//! - `reconcile`: what must change in the kernel's table to match the config (never a flush).
//! - `director`: the director's own side in ipvs mode (addresses, ARP and IPVS sysctls).
//! - `conns`: the kernel's connection list (`/proc/net/ip_vs_conn`, templates included).
//! - `report`: the kernel's table and counters as the same status document netfw reports.
//! - `mode`: entering, reading and leaving ipvs mode, in one call each.
//! - `verdicts`: health verdicts as changes to IPVS's real servers (ipvs mode's checker).
//! - `rtnl`: addresses, links and routes over rtnetlink (also the management NIC).
//! - `bpf`, `programs`: the bpf(2) call and the eBPF programs, written as instructions: the
//!   forwarder's (XDP, tc, socket filter) and ipvs mode's firewall marks.
//! - `marks`: ipvs mode's firewall-mark services (port ranges, persistence groups) and the tc
//!   program that marks their packets.
//! - `ethtool`: turning off the receive offloads that merge frames on the forwarder's NICs.
//!
//! The init calls this in-process; `netfw ipvs …` is the same code on the command line.

pub mod bpf;
pub mod conns;
pub mod director;
pub mod ethtool;
pub mod genl;
pub mod ipvs;
pub mod marks;
pub mod mode;
pub mod programs;
pub mod reconcile;
pub mod report;
pub mod rtnl;
pub mod verdicts;
