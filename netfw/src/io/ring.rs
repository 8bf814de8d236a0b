//! One AF_PACKET socket bound to one NIC, with a TPACKET_V2 receive ring and a transmit ring
//! mapped into our memory.
//!
//! Receive: each slot holds one frame, ours while its status says TP_STATUS_USER; we read it
//! in place and give it back (TP_STATUS_KERNEL). The kernel wakes poll(2) for every frame.
//! (TPACKET_V3 packs frames into blocks and wakes the reader only when a block is full or its
//! timer retires it: a jiffy at least, 4 ms on a kernel with HZ 250. Every frame netfw handled
//! itself waited that long: about 60 new connections a second, and, once the kernel forwards a
//! flow in tc, its frames still waiting in netfw's block left after newer ones.) A slot holds
//! the largest merged frame (64 KiB), so merged frames arrive whole for netfw to split; the
//! kernel copies only a frame's bytes into its slot.
//!
//! Transmit: we copy a frame into the next free slot and mark it TP_STATUS_SEND_REQUEST;
//! `flush` makes one `sendto` for all.

use std::fmt;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

use super::nic::{ifindex, NicError};
use super::{Flushed, KernelDrops, Port, Receive, RxFrame, Transmit};

const ETH_P_ALL: u16 = 0x0003;
/// `struct tpacket2_hdr`: status, len, snaplen, mac offset; 32 bytes, then the sockaddr_ll
/// (its packet type at +10).
const HDR_STATUS: usize = 0;
const HDR_LEN: usize = 4;
const HDR_SNAPLEN: usize = 8;
const HDR_MAC: usize = 12;
const HDR_PKTTYPE: usize = 32 + 10;
/// Where a TX frame's data starts: TPACKET2_HDRLEN (52) less the sockaddr_ll (20).
const TX_DATA_OFFSET: usize = 32;
const PACKET_OUTGOING: u8 = 4;
const TPACKET_V2: libc::c_int = 1;

/// Receive ring geometry: slots of 68 KiB (17 pages: the largest merged frame, 64 KiB, from
/// its offset of 66 in the slot), 15 to a block of 1 MiB, 16 blocks: 240 slots in 16 MiB.
/// (The kernel allocates each block as a power of two of pages: one slot per block took
/// 128 KiB for 68, and the same 16 MiB held only 128 slots, which a burst of new flows' first
/// packets could fill before netfw was scheduled.)
const RX_FRAME_SIZE: u32 = 17 * 4096;
const RX_BLOCK_SIZE: u32 = 1 << 20;
const RX_FRAMES_PER_BLOCK: u32 = RX_BLOCK_SIZE / RX_FRAME_SIZE;
const RX_BLOCK_NR: u32 = 16;
const RX_FRAME_NR: u32 = RX_FRAMES_PER_BLOCK * RX_BLOCK_NR;
// What the kernel checks of the geometry (`packet_set_ring`), checked when we build.
const _: () = assert!(RX_FRAMES_PER_BLOCK == 15 && RX_FRAME_SIZE.is_multiple_of(16) && RX_BLOCK_SIZE.is_multiple_of(4096));

/// Where receive slot `i` starts in the ring's mapping (slots do not span blocks, and a block
/// ends in a gap smaller than a slot). Constants, so no division at run time.
const fn rx_slot_offset(i: usize) -> usize {
    let per_block = RX_FRAMES_PER_BLOCK as usize;
    i / per_block * RX_BLOCK_SIZE as usize + i % per_block * RX_FRAME_SIZE as usize
}
/// Transmit ring geometry: 512 frames of 2 KiB.
const TX_FRAME_SIZE: u32 = 2048;
const TX_BLOCK_SIZE: u32 = 1 << 16;
const TX_BLOCK_NR: u32 = 16;

/// Why a ring could not be set up.
#[derive(Debug)]
pub enum RingError {
    /// The NIC is missing.
    Nic(NicError),
    /// A socket call failed.
    Os {
        /// Which step.
        step: &'static str,
        /// The NIC.
        nic: String,
        /// errno.
        error: std::io::Error,
    },
}

impl fmt::Display for RingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RingError::Nic(e) => e.fmt(f),
            RingError::Os { step, nic, error } => write!(f, "cannot open NIC \"{nic}\" for the forwarder ({step}): {error}"),
        }
    }
}

impl std::error::Error for RingError {}

/// The receive half.
#[derive(Debug)]
pub struct RxRing {
    base: NonNull<u8>,
    frame_size: usize,
    frame_nr: usize,
    cur: usize,
}

/// The transmit half.
#[derive(Debug)]
pub struct TxRing {
    base: NonNull<u8>,
    frame_size: usize,
    frame_nr: usize,
    cur: usize,
    pending: usize,
    /// Frames the kernel marked TP_STATUS_WRONG_FORMAT (refused) since the last flush.
    refused: u64,
    fd: RawFd,
}

/// A socket with both rings.
#[derive(Debug)]
pub struct PacketRing {
    /// Receive ring.
    pub rx: RxRing,
    /// Transmit ring.
    pub tx: TxRing,
    fd: OwnedFd,
    map: NonNull<u8>,
    map_len: usize,
    /// The NIC's name.
    pub nic: String,
}

// SAFETY: every pointer in it points into the socket's ring mapping, which it owns; it is used
// by one thread at a time (the worker it was moved to).
unsafe impl Send for PacketRing {}

fn os(step: &'static str, nic: &str) -> RingError {
    RingError::Os { step, nic: nic.into(), error: std::io::Error::last_os_error() }
}

fn setsockopt<T>(fd: RawFd, opt: libc::c_int, val: &T, step: &'static str, nic: &str) -> Result<(), RingError> {
    let len = libc::socklen_t::try_from(std::mem::size_of::<T>()).unwrap_or(0);
    // SAFETY: `val` points to a live `T` of `len` bytes for the duration of the call.
    let r = unsafe { libc::setsockopt(fd, libc::SOL_PACKET, opt, std::ptr::from_ref(val).cast(), len) };
    if r == 0 {
        Ok(())
    } else {
        Err(os(step, nic))
    }
}

/// The status word at `p + off` (the kernel writes it concurrently, so it is atomic).
///
/// # Safety
/// `p + off` must be inside the mapped ring and 4-byte aligned.
unsafe fn status_at<'a>(p: NonNull<u8>, off: usize) -> &'a AtomicU32 {
    // SAFETY: in bounds per the caller.
    let at = unsafe { p.as_ptr().add(off) };
    // SAFETY: aligned and inside the mapping, which outlives every use of the reference.
    unsafe { &*at.cast::<AtomicU32>() }
}

/// `len` bytes of the mapping from `p + off`, as a slice we own for now.
///
/// # Safety
/// The range must be inside the mapping, owned by us (the kernel does not write it until we
/// hand it back), and not aliased by another live reference.
unsafe fn region<'a>(p: NonNull<u8>, off: usize, len: usize) -> &'a mut [u8] {
    // SAFETY: in bounds per the caller.
    let at = unsafe { p.as_ptr().add(off) };
    // SAFETY: owned and unaliased per the caller.
    unsafe { std::slice::from_raw_parts_mut(at, len) }
}

fn le32(b: &[u8], at: usize) -> usize {
    b.get(at..at + 4).map_or(0, |x| u32::from_ne_bytes([x[0], x[1], x[2], x[3]]) as usize)
}

fn le16(b: &[u8], at: usize) -> usize {
    b.get(at..at + 2).map_or(0, |x| usize::from(u16::from_ne_bytes([x[0], x[1]])))
}

impl PacketRing {
    /// Open `nic` with both rings. Needs CAP_NET_RAW.
    pub fn open(nic: &str) -> Result<PacketRing, RingError> {
        let index = ifindex(nic).map_err(RingError::Nic)?;
        // Protocol 0: receive nothing until bound to the NIC below.
        // SAFETY: plain socket(2) call.
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK, 0) };
        if raw < 0 {
            return Err(os("socket", nic));
        }
        // SAFETY: `raw` is a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        setsockopt(raw, 10 /* PACKET_VERSION */, &TPACKET_V2, "PACKET_VERSION", nic)?;
        let one: libc::c_int = 1;
        setsockopt(raw, 20 /* PACKET_QDISC_BYPASS */, &one, "PACKET_QDISC_BYPASS", nic)?;
        // Each frame sent is a socket buffer charged to this socket until the NIC frees it; the
        // default budget (net.core.wmem_default) is a few hundred small frames, far fewer than
        // the transmit ring holds, and a full budget stalls the flush.
        let sndbuf = super::xsk::SNDBUF;
        // SAFETY: an int option of the right size.
        unsafe { libc::setsockopt(raw, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, std::ptr::from_ref(&sndbuf).cast(), 4) };
        // Not fatal before Linux 4.20: outgoing frames are also skipped by pkttype below.
        let _ = setsockopt(raw, 23 /* PACKET_IGNORE_OUTGOING */, &one, "PACKET_IGNORE_OUTGOING", nic);

        let rx_req = libc::tpacket_req {
            tp_block_size: RX_BLOCK_SIZE,
            tp_block_nr: RX_BLOCK_NR,
            tp_frame_size: RX_FRAME_SIZE,
            tp_frame_nr: RX_FRAME_NR,
        };
        setsockopt(raw, 5 /* PACKET_RX_RING */, &rx_req, "PACKET_RX_RING", nic)?;
        let tx_req = libc::tpacket_req {
            tp_block_size: TX_BLOCK_SIZE,
            tp_block_nr: TX_BLOCK_NR,
            tp_frame_size: TX_FRAME_SIZE,
            tp_frame_nr: TX_BLOCK_SIZE / TX_FRAME_SIZE * TX_BLOCK_NR,
        };
        setsockopt(raw, 13 /* PACKET_TX_RING */, &tx_req, "PACKET_TX_RING", nic)?;

        let rx_len = (RX_BLOCK_SIZE * RX_BLOCK_NR) as usize;
        let tx_len = (TX_BLOCK_SIZE * TX_BLOCK_NR) as usize;
        let map_len = rx_len + tx_len;
        // SAFETY: mapping the rings the kernel just allocated for this socket.
        let p = unsafe {
            libc::mmap(std::ptr::null_mut(), map_len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED | libc::MAP_LOCKED, raw, 0)
        };
        let p = if p == libc::MAP_FAILED {
            // MAP_LOCKED can fail under a low RLIMIT_MEMLOCK; retry without it.
            // SAFETY: as above.
            unsafe { libc::mmap(std::ptr::null_mut(), map_len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, raw, 0) }
        } else {
            p
        };
        if p == libc::MAP_FAILED {
            return Err(os("mmap", nic));
        }
        let map = NonNull::new(p.cast::<u8>()).ok_or_else(|| os("mmap", nic))?;
        // SAFETY: rx_len is inside the mapping of map_len bytes.
        let tx_at = unsafe { map.as_ptr().add(rx_len) };
        let tx_base = NonNull::new(tx_at).ok_or_else(|| os("mmap", nic))?;

        // SAFETY: sockaddr_ll is plain data; all-zero is a valid value.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = u16::try_from(libc::AF_PACKET).unwrap_or_default();
        sll.sll_protocol = ETH_P_ALL.to_be();
        sll.sll_ifindex = index;
        let sl = libc::socklen_t::try_from(std::mem::size_of::<libc::sockaddr_ll>()).unwrap_or(0);
        // SAFETY: `sll` is a valid sockaddr_ll of `sl` bytes.
        if unsafe { libc::bind(raw, std::ptr::from_ref(&sll).cast(), sl) } != 0 {
            let e = os("bind", nic);
            // SAFETY: unmapping what we mapped above.
            unsafe { libc::munmap(map.as_ptr().cast(), map_len) };
            return Err(e);
        }

        Ok(PacketRing {
            rx: RxRing { base: map, frame_size: RX_FRAME_SIZE as usize, frame_nr: RX_FRAME_NR as usize, cur: 0 },
            tx: TxRing {
                base: tx_base,
                frame_size: TX_FRAME_SIZE as usize,
                frame_nr: (TX_BLOCK_SIZE / TX_FRAME_SIZE * TX_BLOCK_NR) as usize,
                cur: 0,
                pending: 0,
                refused: 0,
                fd: raw,
            },
            fd,
            map,
            map_len,
            nic: nic.into(),
        })
    }

    /// The socket, for poll(2).
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Run the socket filter `prog_fd` on every frame before it enters the receive ring.
    pub fn attach_filter(&self, prog_fd: RawFd) -> std::io::Result<()> {
        // SAFETY: an int option of the right size.
        let r = unsafe { libc::setsockopt(self.fd(), libc::SOL_SOCKET, libc::SO_ATTACH_BPF, std::ptr::from_ref(&prog_fd).cast(), 4) };
        if r == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }

    /// Frames the kernel dropped because the receive ring was full, since the last call
    /// (PACKET_STATISTICS resets on read). One syscall: call it on a timer, not per packet.
    pub fn take_kernel_drops(&self) -> std::io::Result<u64> {
        let mut st = libc::tpacket_stats_v3 { tp_packets: 0, tp_drops: 0, tp_freeze_q_cnt: 0 };
        let mut len = libc::socklen_t::try_from(std::mem::size_of::<libc::tpacket_stats_v3>()).unwrap_or(0);
        // SAFETY: `st` is a valid tpacket_stats_v3 of `len` bytes for the kernel to fill.
        let r = unsafe {
            libc::getsockopt(self.fd(), libc::SOL_PACKET, 6 /* PACKET_STATISTICS */, std::ptr::from_mut(&mut st).cast(), &mut len)
        };
        if r == 0 {
            Ok(u64::from(st.tp_drops))
        } else {
            Err(std::io::Error::last_os_error())
        }
    }
}

impl Port for PacketRing {
    type Rx = RxRing;
    type Tx = TxRing;
    fn halves(&mut self) -> (&mut RxRing, &mut TxRing) {
        (&mut self.rx, &mut self.tx)
    }
    fn fds(&self) -> Vec<RawFd> {
        vec![PacketRing::fd(self)]
    }
    fn kernel_drops(&mut self) -> std::io::Result<KernelDrops> {
        // AF_PACKET hands over long frames cut short (counted as they arrive), never drops them.
        self.take_kernel_drops().map(|ring_overflow| KernelDrops { ring_overflow, oversize: 0 })
    }
}

impl Drop for PacketRing {
    fn drop(&mut self) {
        // SAFETY: unmapping the region mapped in `open`; no references into it survive `self`.
        unsafe { libc::munmap(self.map.as_ptr().cast(), self.map_len) };
    }
}

impl Receive for RxRing {
    /// Hand every ready frame to `f` (no more than transmit can take: `rx_take`), then give
    /// their slots back. Returns the number of frames.
    fn receive(&mut self, budget: usize, room: usize, mut f: impl FnMut(RxFrame<'_>)) -> usize {
        let take = super::rx_take(budget, room).min(self.frame_nr);
        let mut frames = 0;
        for _ in 0..take {
            let off = rx_slot_offset(self.cur);
            // SAFETY: `off` is a slot start inside the rx mapping; tp_status is at +0, aligned.
            let status = unsafe { status_at(self.base, off + HDR_STATUS) };
            let st = status.load(Ordering::Acquire);
            if st & libc::TP_STATUS_USER == 0 {
                break;
            }
            {
                // SAFETY: the slot is ours while its status says TP_STATUS_USER, until the store
                // below; this is the only reference into it.
                let slot = unsafe { region(self.base, off, self.frame_size) };
                frames += usize::from(read_slot(slot, st, &mut f));
            }
            status.store(libc::TP_STATUS_KERNEL, Ordering::Release);
            self.cur = (self.cur + 1) % self.frame_nr;
        }
        frames
    }
}

/// Hand the frame in a TPACKET_V2 slot (status `st`) to `f`, bounds-checking everything the
/// kernel wrote; frames this host sent are skipped. Whether a frame was handed over.
fn read_slot(slot: &mut [u8], st: u32, f: &mut impl FnMut(RxFrame<'_>)) -> bool {
    let (len, snaplen, mac) = (le32(slot, HDR_LEN), le32(slot, HDR_SNAPLEN), le16(slot, HDR_MAC));
    if slot.get(HDR_PKTTYPE).is_none_or(|t| *t == PACKET_OUTGOING) {
        return false;
    }
    let Some(data) = slot.get_mut(mac..mac.saturating_add(snaplen)) else { return false };
    f(RxFrame {
        data,
        vlan_tagged: st & libc::TP_STATUS_VLAN_VALID != 0,
        csum_not_ready: st & libc::TP_STATUS_CSUMNOTREADY != 0,
        truncated: len > snaplen,
    });
    true
}

/// How often a flush retries after the kernel dropped a frame for a full NIC queue.
const FLUSH_RETRIES: usize = 8;

impl Transmit for TxRing {
    /// Queue a frame. Returns false when the ring is full (after one flush) or the frame is too
    /// long for a slot.
    fn send(&mut self, frame: &[u8]) -> bool {
        if frame.len() > self.frame_size - TX_DATA_OFFSET {
            return false;
        }
        if !self.slot_free() {
            let f = self.flush();
            self.refused += f.dropped;
            if !self.slot_free() {
                return false;
            }
        }
        let off = self.cur * self.frame_size;
        // SAFETY: tp_status at +20 of a slot start, 4-byte aligned, inside the mapping.
        if unsafe { status_at(self.base, off + HDR_STATUS) }.load(Ordering::Acquire) & libc::TP_STATUS_WRONG_FORMAT != 0 {
            // The kernel refused the frame that was here: it never went out.
            self.refused += 1;
        }
        {
            // SAFETY: the slot is inside the tx mapping and free (status AVAILABLE or
            // WRONG_FORMAT), so the kernel does not touch it until we set SEND_REQUEST; no
            // other reference exists.
            let slot = unsafe { region(self.base, off, self.frame_size) };
            slot[TX_DATA_OFFSET..TX_DATA_OFFSET + frame.len()].copy_from_slice(frame);
            let len = u32::try_from(frame.len()).unwrap_or(0);
            slot[HDR_LEN..HDR_LEN + 4].copy_from_slice(&len.to_ne_bytes());
        }
        // SAFETY: tp_status at +20 of a slot start, 4-byte aligned, inside the mapping.
        unsafe { status_at(self.base, off + HDR_STATUS) }.store(libc::TP_STATUS_SEND_REQUEST, Ordering::Release);
        self.cur = (self.cur + 1) % self.frame_nr;
        self.pending += 1;
        true
    }

    /// Kick the kernel to send every queued frame: one syscall per batch. With
    /// PACKET_QDISC_BYPASS a full NIC queue makes the kernel drop the frame it was sending and
    /// fail with ENOBUFS: that frame is counted and the rest is sent by retrying.
    fn flush(&mut self) -> Flushed {
        let mut out = Flushed { dropped: std::mem::take(&mut self.refused), failed: None };
        if self.pending == 0 {
            return out;
        }
        for _ in 0..FLUSH_RETRIES {
            // SAFETY: sendto with no buffer on a packet socket with a TX ring sends the ring.
            let r = unsafe { libc::sendto(self.fd, std::ptr::null(), 0, libc::MSG_DONTWAIT, std::ptr::null(), 0) };
            if r >= 0 {
                self.pending = 0;
                return out;
            }
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::ENOBUFS) => out.dropped += 1,
                Some(libc::EAGAIN | libc::EINTR) => {}
                _ => {
                    out.failed = Some(e);
                    return out;
                }
            }
        }
        out
    }
}

impl TxRing {
    fn slot_free(&self) -> bool {
        // SAFETY: tp_status of the current slot, inside the mapping and aligned.
        let st = unsafe { status_at(self.base, self.cur * self.frame_size + HDR_STATUS) }.load(Ordering::Acquire);
        st == libc::TP_STATUS_AVAILABLE || st & libc::TP_STATUS_WRONG_FORMAT != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receive_slots_fill_each_block_and_stay_inside_the_ring() {
        let (frame, block) = (RX_FRAME_SIZE as usize, RX_BLOCK_SIZE as usize);
        assert_eq!(rx_slot_offset(1), frame);
        assert_eq!(rx_slot_offset(14), 14 * frame);
        assert_eq!(rx_slot_offset(15), block, "slot 15 opens the second block");
        let last = RX_FRAME_NR as usize - 1;
        assert_eq!(rx_slot_offset(last) + frame, (RX_BLOCK_NR as usize - 1) * block + 15 * frame);
        assert!(rx_slot_offset(last) + frame <= (RX_BLOCK_SIZE * RX_BLOCK_NR) as usize);
    }
}
