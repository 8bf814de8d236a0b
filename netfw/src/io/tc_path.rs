//! The kernel's part in forwarding with AF_PACKET: `programs::forward` on the VIP-facing NIC's
//! tc ingress, and `programs::skip_forwarded` on netfw's socket there.
//!
//! tc runs on the kernel's socket buffers, after the driver and GRO: a merged frame (GRO, the
//! host's TSO through a virtual NIC's offloads) of an established flow is forwarded whole, and
//! the NIC it leaves by segments it if it must. This is what keeps a bulk upload through the
//! box at the kernel's own speed, where XDP (which sees only MTU-sized frames, and on
//! virtio_net turns the guest's receive offloads off) moves it one MTU at a time.
//!
//! An AF_PACKET socket bound to every protocol sees each frame before tc does, so the filter
//! keeps from it what tc will forward: both programs are built from the same checks over the
//! same maps. Between the two reads a reload or a flow's removal can change an entry; such a
//! frame (one, at that instant) is then neither forwarded nor seen, and TCP sends it again.

use netfw_kernel::rtnl;

use super::bpf::{BpfError, Program, ProgramKind};
use super::kernel_flows::KernelFlows;
use super::programs::{self, Hook};
use super::ring::PacketRing;

/// Why the tc path could not be set up (netfw then forwards every packet itself).
#[derive(Debug)]
pub enum TcError {
    /// A program was refused.
    Bpf(BpfError),
    /// The filter could not be put on the socket.
    Filter(std::io::Error),
    /// tc refused the qdisc or the program.
    Attach(rtnl::RtnlError),
}

impl std::fmt::Display for TcError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TcError::Bpf(e) => e.fmt(f),
            TcError::Filter(e) => write!(f, "the socket filter could not be attached: {e}"),
            TcError::Attach(e) => e.fmt(f),
        }
    }
}

/// The programs in place on one NIC; dropping it takes them off.
#[derive(Debug)]
pub struct TcPath {
    nic: String,
    _forward: Program,
    _filter: Program,
}

impl TcPath {
    /// Put the forwarding program on `nic`'s ingress and its filter on `ring` (the socket on
    /// `nic`), over `kernel`'s maps; `mac` is `nic`'s.
    pub fn attach(nic: &str, ring: &PacketRing, kernel: &KernelFlows, mac: [u8; 6]) -> Result<TcPath, TcError> {
        let maps = kernel.maps(mac);
        let filter = Program::load(ProgramKind::SocketFilter, &programs::skip_forwarded(maps)).map_err(TcError::Bpf)?;
        let forward = Program::load(ProgramKind::SchedCls, &programs::forward(maps, Hook::Tc)).map_err(TcError::Bpf)?;
        // The filter first: from the moment tc forwards, netfw's socket must not see it too.
        ring.attach_filter(filter.fd()).map_err(TcError::Filter)?;
        rtnl::attach_tc_ingress(nic, forward.fd(), ProgramKind::SchedCls.name()).map_err(TcError::Attach)?;
        Ok(TcPath { nic: nic.into(), _forward: forward, _filter: filter })
    }
}

impl Drop for TcPath {
    fn drop(&mut self) {
        let _ = rtnl::detach_tc(&self.nic);
    }
}
