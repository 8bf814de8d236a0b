//! NIC I/O for the forwarder, behind two small traits so the poll loop does not care which
//! backend moves the frames (and tests can drive it with frames in memory).
//!
//! - `Port`: one NIC: a receive half, a transmit half, and the kernel's drop counter.
//! - `ring`: AF_PACKET sockets with PACKET_MMAP rings (TPACKET_V2 receive slots read in
//!   place, a transmit frame ring flushed with one `sendto` per batch, PACKET_QDISC_BYPASS).
//! - `xsk` (with `bpf` and `programs`, netfw-kernel's, the XDP program that steers frames to it): AF_XDP
//!   sockets, one per receive queue, frames read in place from a UMEM; the backend of choice
//!   on NICs with a driver (see `backend`).
//! - `kernel_flows`: the kernel forwards established flows itself (in XDP with AF_XDP, in tc
//!   with AF_PACKET: `tc_path`); netfw keeps its flow map, backends and counters.
//! - `backend`: which of the two a NIC gets, and why (the start line says it).
//! - `nic`: facts about a NIC by name (index, MAC, MTU).
//! - `membership`: extra MACs a NIC receives (the HA pair's virtual MAC, the VRRP group).
//!
//! No syscall and no allocation per packet.

pub mod backend;
pub use netfw_kernel::{bpf, programs};
pub mod kernel_flows;
pub mod membership;
pub mod nic;
pub mod ring;
pub mod tc_path;
pub mod watch_socket;
pub mod xsk;

use std::os::fd::RawFd;

pub use nic::{nic_mac, NicError};
pub use ring::{PacketRing, RingError, RxRing, TxRing};

/// A received frame, as the backend left it in its ring.
#[derive(Debug)]
pub struct RxFrame<'a> {
    /// The bytes, from the Ethernet header on (writable: the forwarder rewrites MACs in place).
    pub data: &'a mut [u8],
    /// The kernel stripped an 802.1Q tag into metadata.
    pub vlan_tagged: bool,
    /// The L4 checksum is not computed yet (from a local stack over a virtual NIC).
    pub csum_not_ready: bool,
    /// The frame was longer than the ring slot and is cut short (e.g. a GSO super-packet).
    pub truncated: bool,
}

/// What a flush did not get out.
#[derive(Debug, Default)]
pub struct Flushed {
    /// Frames the kernel dropped (its queue was full, or it refused the frame).
    pub dropped: u64,
    /// The flush failed for another reason; the frames stay queued and are retried.
    pub failed: Option<std::io::Error>,
}

/// What the kernel dropped before netfw saw it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct KernelDrops {
    /// The receive ring was full (AF_XDP: or no free frame on the fill ring).
    pub ring_overflow: u64,
    /// Frames too large for a ring slot (AF_XDP: a merged frame from a virtual NIC).
    pub oversize: u64,
}

/// The receive half of a NIC.
pub trait Receive {
    /// Hand every waiting frame (up to `budget` batches) to `f`; returns how many frames.
    /// `room` is how many frames transmit can take now: a backend that can leave frames
    /// waiting cheaply takes about that many (rather than receive what it would drop).
    fn receive(&mut self, budget: usize, room: usize, f: impl FnMut(RxFrame<'_>)) -> usize;
}

/// Frames a turn receives even when transmit has no room: a transmit queue that only frees
/// frames when it sends again, and the control stack's frames, are never starved.
const MIN_RX_PER_TURN: usize = 16;

/// How many frames a backend that can leave frames waiting cheaply (in its ring, where a full
/// ring makes the kernel drop new ones before copying them) takes in one turn: about what
/// transmit can take (`room`), at least `MIN_RX_PER_TURN`, at most 4 per `budget` batch.
pub fn rx_take(budget: usize, room: usize) -> usize {
    budget.saturating_mul(4).min(room.max(MIN_RX_PER_TURN))
}

/// The transmit half of a NIC.
pub trait Transmit {
    /// Queue a frame; false if it cannot be queued (ring full, frame too long).
    fn send(&mut self, frame: &[u8]) -> bool;
    /// About how many frames `send` takes now (unknown: as many as come).
    fn room(&mut self) -> usize {
        usize::MAX
    }
    /// Hand everything queued to the NIC (one syscall per batch).
    fn flush(&mut self) -> Flushed;
}

/// One dedicated NIC.
pub trait Port {
    /// Receive half.
    type Rx: Receive;
    /// Transmit half.
    type Tx: Transmit;
    /// Both halves at once (a frame received here may be sent back out here).
    fn halves(&mut self) -> (&mut Self::Rx, &mut Self::Tx);
    /// The descriptors to poll(2) for received frames (asked once, at start).
    fn fds(&self) -> Vec<RawFd>;
    /// Frames the kernel dropped on the way in, since the last call.
    fn kernel_drops(&mut self) -> std::io::Result<KernelDrops>;
}
