//! AF_XDP: one socket per receive queue of a NIC, each with its own UMEM (frames of 2 KiB in
//! one mapping), fill and completion rings, receive and transmit rings, all mapped into our
//! memory. The XDP program (`programs`) redirects the NIC's frames to these sockets.
//!
//! Receive: frames are read in place from the UMEM and their buffers handed straight back on
//! the fill ring. Transmit: a frame is copied into a free UMEM frame and queued on the
//! transmit ring; one `sendto` per batch kicks the kernel (copy mode needs it); completed
//! frames come back on the completion ring. No syscall and no allocation per packet.
//!
//! Ring protocol (`include/uapi/linux/if_xdp.h`, `net/xdp/xsk_queue.h`): free-running u32
//! indices; the consumer loads the producer index with acquire and stores its own with
//! release, and so does the producer the other way round.

use std::fmt;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use super::bpf::{BpfError, Program, ProgramKind, XskMap};
use super::nic::ifindex;
use super::{Flushed, KernelDrops, Port, Receive, RxFrame, Transmit};
use netfw_kernel::rtnl::{self, XdpMode};

const AF_XDP: libc::c_int = 44;
/// `AF_XDP` as `sockaddr_xdp.sxdp_family` spells it.
const AF_XDP_FAMILY: u16 = 44;
const SOL_XDP: libc::c_int = 283;
const XDP_MMAP_OFFSETS: libc::c_int = 1;
const XDP_RX_RING: libc::c_int = 2;
const XDP_TX_RING: libc::c_int = 3;
const XDP_UMEM_REG: libc::c_int = 4;
const XDP_UMEM_FILL_RING: libc::c_int = 5;
const XDP_UMEM_COMPLETION_RING: libc::c_int = 6;
const XDP_STATISTICS: libc::c_int = 7;
const XDP_PGOFF_RX_RING: libc::off_t = 0;
const XDP_PGOFF_TX_RING: libc::off_t = 0x8000_0000;
const XDP_UMEM_PGOFF_FILL_RING: libc::off_t = 0x1_0000_0000;
const XDP_UMEM_PGOFF_COMPLETION_RING: libc::off_t = 0x1_8000_0000;
const XDP_COPY: u16 = 2;
const XDP_USE_NEED_WAKEUP: u16 = 8;
const XDP_RING_NEED_WAKEUP: u32 = 1;

/// UMEM frame size, as the UMEM registration spells it.
const FRAME_U32: u32 = 2048;
/// The same, for indexing.
const FRAME: usize = FRAME_U32 as usize;
/// Frames for receiving (all on the fill ring when idle).
const RX_FRAMES: u32 = 2048;
/// Frames for transmitting.
const TX_FRAMES: u32 = 1024;
/// The socket's send budget (SO_SNDBUFFORCE), in bytes: every transmit frame in flight.
pub const SNDBUF: libc::c_int = 16 << 20;
/// The largest frame received into a 2 KiB frame (the kernel keeps 256 bytes of headroom).
pub const MAX_RX_FRAME: usize = FRAME - 256;

/// Why AF_XDP could not be set up on a NIC.
#[derive(Debug)]
pub enum XskError {
    /// The NIC is missing.
    Nic(String),
    /// A socket call failed.
    Os {
        /// Which step.
        step: &'static str,
        /// The NIC.
        nic: String,
        /// errno.
        error: std::io::Error,
    },
    /// The program or map.
    Bpf(BpfError),
    /// Attaching the program.
    Attach(rtnl::RtnlError),
}

impl fmt::Display for XskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            XskError::Nic(m) => f.write_str(m),
            XskError::Os { step, nic, error } => write!(f, "AF_XDP on {nic} ({step}): {error}"),
            XskError::Bpf(e) => e.fmt(f),
            XskError::Attach(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for XskError {}

#[repr(C)]
#[derive(Default)]
struct RingOffset {
    producer: u64,
    consumer: u64,
    desc: u64,
    flags: u64,
}

#[repr(C)]
#[derive(Default)]
struct MmapOffsets {
    rx: RingOffset,
    tx: RingOffset,
    fr: RingOffset,
    cr: RingOffset,
}

/// A mapped ring: its producer, consumer and flags words and its entries.
#[derive(Debug)]
struct Ring {
    map: NonNull<u8>,
    map_len: usize,
    producer: NonNull<AtomicU32>,
    consumer: NonNull<AtomicU32>,
    flags: NonNull<AtomicU32>,
    entries: NonNull<u8>,
    mask: u32,
    /// Our copy of the index we own (consumer for rx/cr, producer for fr/tx).
    cached: u32,
}

impl Ring {
    fn producer(&self) -> &AtomicU32 {
        // SAFETY: inside the mapping (offset given by the kernel), aligned, alive with self.
        unsafe { self.producer.as_ref() }
    }
    fn consumer(&self) -> &AtomicU32 {
        // SAFETY: as above.
        unsafe { self.consumer.as_ref() }
    }
    fn flags(&self) -> &AtomicU32 {
        // SAFETY: as above.
        unsafe { self.flags.as_ref() }
    }
    /// Entry `idx` of a ring of `size`-byte entries, as a pointer.
    fn entry(&self, idx: u32, size: usize) -> *mut u8 {
        let at = usize::try_from(idx & self.mask).unwrap_or(0) * size;
        // SAFETY: `at` is within the entries area of `mask + 1` entries of `size` bytes.
        unsafe { self.entries.as_ptr().add(at) }
    }
    fn u64_at(&self, idx: u32) -> u64 {
        // SAFETY: an 8-byte entry of a fill/completion ring, aligned, inside the mapping.
        unsafe { self.entry(idx, 8).cast::<u64>().read_volatile() }
    }
    fn set_u64(&self, idx: u32, v: u64) {
        // SAFETY: as above; the slot is ours (not yet published to the kernel).
        unsafe { self.entry(idx, 8).cast::<u64>().write_volatile(v) }
    }
    fn desc(&self, idx: u32) -> (u64, u32) {
        let p = self.entry(idx, 16);
        let len_at = p.wrapping_add(8).cast::<u32>();
        // SAFETY: a 16-byte xdp_desc { addr u64, len u32, options u32 }, aligned, published
        // to us by the kernel's producer index.
        let addr = unsafe { p.cast::<u64>().read_volatile() };
        // SAFETY: as above.
        (addr, unsafe { len_at.read_volatile() })
    }
    fn set_desc(&self, idx: u32, addr: u64, len: u32) {
        let p = self.entry(idx, 16);
        // SAFETY: as above; the slot is ours until the producer index is published.
        unsafe {
            p.cast::<u64>().write_volatile(addr);
        }
        let len_at = p.wrapping_add(8).cast::<u64>();
        // SAFETY: as above (len and options, both ours to write).
        unsafe {
            len_at.write_volatile(u64::from(len));
        }
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: unmapping what `map_ring` mapped.
        unsafe { libc::munmap(self.map.as_ptr().cast(), self.map_len) };
    }
}

fn os(step: &'static str, nic: &str) -> XskError {
    XskError::Os { step, nic: nic.into(), error: std::io::Error::last_os_error() }
}

fn setopt<T>(fd: RawFd, opt: libc::c_int, v: &T, step: &'static str, nic: &str) -> Result<(), XskError> {
    let len = libc::socklen_t::try_from(std::mem::size_of::<T>()).unwrap_or(0);
    // SAFETY: `v` is a live `T` of `len` bytes for the call.
    if unsafe { libc::setsockopt(fd, SOL_XDP, opt, std::ptr::from_ref(v).cast(), len) } == 0 {
        Ok(())
    } else {
        Err(os(step, nic))
    }
}

fn map_ring(fd: RawFd, off: &RingOffset, pgoff: libc::off_t, n: u32, entry: usize, nic: &str) -> Result<Ring, XskError> {
    let len = usize::try_from(off.desc).unwrap_or(0) + usize::try_from(n).unwrap_or(0) * entry;
    // SAFETY: mapping the ring the kernel allocated for this socket at `pgoff`.
    let p = unsafe {
        libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED | libc::MAP_POPULATE, fd, pgoff)
    };
    if p == libc::MAP_FAILED {
        return Err(os("mmap a ring", nic));
    }
    let base = p.cast::<u8>();
    let at = |o: u64| {
        // SAFETY: the kernel's offsets lie inside the mapping of `len` bytes.
        NonNull::new(unsafe { base.add(usize::try_from(o).unwrap_or(0)) })
    };
    let bad = || os("ring offsets", nic);
    Ok(Ring {
        map: NonNull::new(base).ok_or_else(bad)?,
        map_len: len,
        producer: at(off.producer).ok_or_else(bad)?.cast(),
        consumer: at(off.consumer).ok_or_else(bad)?.cast(),
        flags: at(off.flags).ok_or_else(bad)?.cast(),
        entries: at(off.desc).ok_or_else(bad)?,
        mask: n - 1,
        cached: 0,
    })
}

/// What an AF_XDP socket owns: the socket and its UMEM mapping (unmapped on drop).
#[derive(Debug)]
struct Owner {
    fd: OwnedFd,
    umem: NonNull<u8>,
    umem_len: usize,
}

impl Drop for Owner {
    fn drop(&mut self) {
        // SAFETY: unmapping the UMEM mapped in `open_socket`; the rings referring to it are
        // dropped first (they are fields declared before `owners` in `XdpPort`).
        unsafe { libc::munmap(self.umem.as_ptr().cast(), self.umem_len) };
    }
}

/// The UMEM as seen by one half of a socket.
#[derive(Debug, Clone, Copy)]
struct Umem {
    base: NonNull<u8>,
    len: usize,
}

impl Umem {
    /// The frame at UMEM address `addr` of `len` bytes.
    ///
    /// # Safety
    /// `addr..addr + len` must lie inside one frame of the UMEM that nobody else uses now.
    #[allow(clippy::mut_from_ref, reason = "the UMEM is shared memory; each frame has one user at a time, by the ring protocol")]
    unsafe fn frame(&self, addr: u64, len: usize) -> &mut [u8] {
        let at = usize::try_from(addr).unwrap_or(0).min(self.len.saturating_sub(len));
        let start = self.base.as_ptr().wrapping_add(at);
        // SAFETY: in bounds (clamped above) and unaliased per the caller.
        unsafe { std::slice::from_raw_parts_mut(start, len) }
    }
}

/// The receiving half of a socket: its receive and fill rings.
#[derive(Debug)]
pub struct XskRx {
    fd: RawFd,
    umem: Umem,
    fill: Ring,
    rx: Ring,
    last_drops: KernelDrops,
}

/// The transmitting half of a socket: its transmit and completion rings, and free frames.
#[derive(Debug)]
pub struct XskTx {
    fd: RawFd,
    umem: Umem,
    comp: Ring,
    tx: Ring,
    free: Vec<u64>,
    pending: u32,
}

fn open_socket(nic: &str, ifindex: u32, queue: u32) -> Result<(Owner, XskRx, XskTx), XskError> {
    // SAFETY: plain socket(2).
    let raw = unsafe { libc::socket(AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(os("socket", nic));
    }
    // SAFETY: a fresh descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let frames = RX_FRAMES + TX_FRAMES;
    let umem_len = usize::try_from(frames).unwrap_or(0) * FRAME;
    // SAFETY: an anonymous private mapping for the UMEM.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            umem_len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(os("mmap the UMEM", nic));
    }
    let base = NonNull::new(p.cast::<u8>()).ok_or_else(|| os("mmap the UMEM", nic))?;
    let owner = Owner { fd, umem: base, umem_len };
    let umem = Umem { base, len: umem_len };
    // struct xdp_umem_reg { addr, len, chunk_size, headroom, flags, (tx_metadata_len) }
    #[repr(C)]
    struct UmemReg {
        addr: u64,
        len: u64,
        chunk_size: u32,
        headroom: u32,
        flags: u32,
        pad: u32,
    }
    let reg = UmemReg { addr: base.as_ptr() as u64, len: umem_len as u64, chunk_size: FRAME_U32, headroom: 0, flags: 0, pad: 0 };
    setopt(raw, XDP_UMEM_REG, &reg, "register the UMEM", nic)?;
    for (opt, n, step) in [
        (XDP_UMEM_FILL_RING, RX_FRAMES * 2, "fill ring"),
        (XDP_UMEM_COMPLETION_RING, TX_FRAMES, "completion ring"),
        (XDP_RX_RING, RX_FRAMES, "rx ring"),
        (XDP_TX_RING, TX_FRAMES, "tx ring"),
    ] {
        setopt(raw, opt, &n, step, nic)?;
    }
    // Copy mode makes a socket buffer of each frame it sends, charged to this socket until the
    // NIC frees it: the default budget (net.core.wmem_default, about 300 small frames) would
    // stall transmit long before the rings are full.
    let sndbuf = SNDBUF;
    // SAFETY: an int option of the right size.
    unsafe { libc::setsockopt(raw, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, std::ptr::from_ref(&sndbuf).cast(), 4) };
    let mut off = MmapOffsets::default();
    let mut len = libc::socklen_t::try_from(std::mem::size_of::<MmapOffsets>()).unwrap_or(0);
    // SAFETY: `off` is a valid buffer of `len` bytes.
    if unsafe { libc::getsockopt(raw, SOL_XDP, XDP_MMAP_OFFSETS, std::ptr::from_mut(&mut off).cast(), &mut len) } != 0 {
        return Err(os("ring offsets", nic));
    }
    let mut fill = map_ring(raw, &off.fr, XDP_UMEM_PGOFF_FILL_RING, RX_FRAMES * 2, 8, nic)?;
    let comp = map_ring(raw, &off.cr, XDP_UMEM_PGOFF_COMPLETION_RING, TX_FRAMES, 8, nic)?;
    let rx = map_ring(raw, &off.rx, XDP_PGOFF_RX_RING, RX_FRAMES, 16, nic)?;
    let tx = map_ring(raw, &off.tx, XDP_PGOFF_TX_RING, TX_FRAMES, 16, nic)?;
    // Every receive frame on the fill ring before any traffic; the rest are for transmit.
    for i in 0..RX_FRAMES {
        fill.set_u64(i, u64::from(i) * FRAME as u64);
    }
    fill.cached = RX_FRAMES;
    fill.producer().store(RX_FRAMES, Ordering::Release);
    // struct sockaddr_xdp { family, flags, ifindex, queue_id, shared_umem_fd }
    #[repr(C)]
    struct SockaddrXdp {
        family: u16,
        flags: u16,
        ifindex: u32,
        queue_id: u32,
        shared_umem_fd: u32,
    }
    let sa = SockaddrXdp { family: AF_XDP_FAMILY, flags: XDP_COPY | XDP_USE_NEED_WAKEUP, ifindex, queue_id: queue, shared_umem_fd: 0 };
    let sl = libc::socklen_t::try_from(std::mem::size_of::<SockaddrXdp>()).unwrap_or(0);
    // SAFETY: `sa` is a valid sockaddr_xdp of `sl` bytes.
    if unsafe { libc::bind(raw, std::ptr::from_ref(&sa).cast(), sl) } != 0 {
        return Err(os("bind to the queue", nic));
    }
    let free = (RX_FRAMES..frames).map(|i| u64::from(i) * FRAME as u64).collect();
    Ok((owner, XskRx { fd: raw, umem, fill, rx, last_drops: KernelDrops::default() }, XskTx { fd: raw, umem, comp, tx, free, pending: 0 }))
}

impl XskRx {
    fn receive(&mut self, budget: u32, csum_not_ready: bool, f: &mut impl FnMut(RxFrame<'_>)) -> usize {
        let prod = self.rx.producer().load(Ordering::Acquire);
        let n = prod.wrapping_sub(self.rx.cached).min(budget);
        for k in 0..n {
            let (addr, len) = self.rx.desc(self.rx.cached.wrapping_add(k));
            let len = usize::try_from(len).unwrap_or(0).min(MAX_RX_FRAME);
            // SAFETY: the kernel published this descriptor: its frame is ours until we put it
            // back on the fill ring below; `len` is within one frame.
            let data = unsafe { self.umem.frame(addr, len) };
            f(RxFrame { data, vlan_tagged: false, csum_not_ready, truncated: false });
            self.fill.set_u64(self.fill.cached.wrapping_add(k), addr & !(FRAME as u64 - 1));
        }
        if n > 0 {
            self.rx.cached = self.rx.cached.wrapping_add(n);
            self.rx.consumer().store(self.rx.cached, Ordering::Release);
            self.fill.cached = self.fill.cached.wrapping_add(n);
            self.fill.producer().store(self.fill.cached, Ordering::Release);
            if self.fill.flags().load(Ordering::Acquire) & XDP_RING_NEED_WAKEUP != 0 {
                // SAFETY: a zero-length recvfrom wakes the driver to take the fill ring.
                unsafe { libc::recvfrom(self.fd, std::ptr::null_mut(), 0, libc::MSG_DONTWAIT, std::ptr::null_mut(), std::ptr::null_mut()) };
            }
        }
        usize::try_from(n).unwrap_or(0)
    }

    /// Frames the kernel dropped on this socket since the last call.
    fn drops(&mut self) -> std::io::Result<KernelDrops> {
        // struct xdp_statistics: rx_dropped, rx_invalid_descs, tx_invalid_descs, rx_ring_full,
        // rx_fill_ring_empty_descs, tx_ring_empty_descs.
        let mut st = [0u64; 6];
        let mut len = libc::socklen_t::try_from(std::mem::size_of_val(&st)).unwrap_or(0);
        // SAFETY: `st` is a valid xdp_statistics buffer of `len` bytes.
        if unsafe { libc::getsockopt(self.fd, SOL_XDP, XDP_STATISTICS, st.as_mut_ptr().cast(), &mut len) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // rx_dropped counts frames too large for a UMEM frame and frames that found the fill
        // ring empty; the latter are also in rx_fill_ring_empty_descs.
        let now = KernelDrops { ring_overflow: st[3] + st[4], oversize: st[0].saturating_sub(st[4]) };
        let d = KernelDrops {
            ring_overflow: now.ring_overflow.saturating_sub(self.last_drops.ring_overflow),
            oversize: now.oversize.saturating_sub(self.last_drops.oversize),
        };
        self.last_drops = now;
        Ok(d)
    }
}

impl XskTx {
    /// Take back the frames the kernel has sent.
    fn reap(&mut self) {
        let prod = self.comp.producer().load(Ordering::Acquire);
        let n = prod.wrapping_sub(self.comp.cached);
        for k in 0..n {
            self.free.push(self.comp.u64_at(self.comp.cached.wrapping_add(k)));
        }
        if n > 0 {
            self.comp.cached = prod;
            self.comp.consumer().store(prod, Ordering::Release);
        }
    }
}

impl Transmit for XskTx {
    fn room(&mut self) -> usize {
        self.reap();
        let queued = self.tx.cached.wrapping_sub(self.tx.consumer().load(Ordering::Acquire));
        let ring = usize::try_from((self.tx.mask + 1).saturating_sub(queued)).unwrap_or(0);
        ring.min(self.free.len())
    }

    fn send(&mut self, frame: &[u8]) -> bool {
        if frame.len() > FRAME {
            return false;
        }
        if self.free.is_empty() {
            self.reap();
        }
        let in_flight = self.tx.cached.wrapping_sub(self.tx.consumer().load(Ordering::Acquire));
        if in_flight > self.tx.mask {
            return false;
        }
        let Some(addr) = self.free.pop() else { return false };
        // SAFETY: `addr` is a free transmit frame (on no ring), and the frame fits in it.
        unsafe { self.umem.frame(addr, frame.len()) }.copy_from_slice(frame);
        self.tx.set_desc(self.tx.cached, addr, u32::try_from(frame.len()).unwrap_or(0));
        self.tx.cached = self.tx.cached.wrapping_add(1);
        self.pending += 1;
        true
    }

    fn flush(&mut self) -> Flushed {
        let mut out = Flushed::default();
        if self.pending > 0 {
            self.tx.producer().store(self.tx.cached, Ordering::Release);
            self.pending = 0;
        }
        // Copy mode sends in the sendto that kicks it, at most 32 frames a call (the kernel's
        // TX_BATCH_SIZE, answered with EAGAIN while more wait): kick until the ring is empty
        // or the NIC's queue is busy (the consumer stops moving), one syscall per 32 frames.
        for _ in 0..=TX_FRAMES / 32 {
            let before = self.tx.consumer().load(Ordering::Acquire);
            if before == self.tx.cached {
                break;
            }
            // SAFETY: sendto with no buffer kicks transmission on an AF_XDP socket.
            let r = unsafe { libc::sendto(self.fd, std::ptr::null(), 0, libc::MSG_DONTWAIT, std::ptr::null(), 0) };
            if r < 0 {
                let e = std::io::Error::last_os_error();
                match e.raw_os_error() {
                    // The batch limit, or the NIC's queue is full: go on while it moves.
                    Some(libc::EAGAIN | libc::ENOBUFS | libc::EINTR) => {}
                    // The NIC dropped one frame (it comes back on the completion ring).
                    Some(libc::EBUSY) => out.dropped += 1,
                    _ => {
                        out.failed = Some(e);
                        break;
                    }
                }
            }
            if self.tx.consumer().load(Ordering::Acquire) == before {
                // Nothing moved: the NIC's queue is full; the frames stay queued for the next
                // turn. (The completion ring holds every transmit frame, so it is never full.)
                break;
            }
        }
        self.reap();
        out
    }
}

/// The receiving halves of every queue's socket.
#[derive(Debug)]
pub struct XdpRx {
    sockets: Vec<XskRx>,
    /// Frames may come with their L4 checksum left to the NIC (generic XDP on a virtual NIC
    /// whose peer offloads checksums; AF_XDP carries no flag for it): complete every one.
    csum_maybe_partial: bool,
}

impl Receive for XdpRx {
    fn receive(&mut self, budget: usize, room: usize, mut f: impl FnMut(RxFrame<'_>)) -> usize {
        // No more than transmit can take (`rx_take`), shared among the queues.
        let queues = self.sockets.len().max(1);
        let take = super::rx_take(budget, room) / queues;
        let per = u32::try_from(take.max(1)).unwrap_or(u32::MAX);
        let partial = self.csum_maybe_partial;
        self.sockets.iter_mut().map(|s| s.receive(per, partial, &mut f)).sum()
    }
}

/// The XDP program attached to a NIC, with its XSK map: detached when the last part of the
/// NIC's port goes (`XdpPort::split`).
#[derive(Debug)]
struct Attachment {
    nic: String,
    mode: XdpMode,
    _map: XskMap,
    _prog: Program,
}

impl Drop for Attachment {
    fn drop(&mut self) {
        let _ = rtnl::detach_xdp(&self.nic, self.mode);
    }
}

/// A NIC run through AF_XDP: the XDP program attached, a socket on each receive queue,
/// transmitting on the first; or, after `split`, one worker's part of that: the sockets of
/// some of the queues, transmitting on the first of them.
#[derive(Debug)]
pub struct XdpPort {
    // Rings first: they are unmapped before the UMEMs `owners` holds.
    rx: XdpRx,
    tx: XskTx,
    /// The transmit halves of the other queues' sockets (for `split`).
    spare_tx: Vec<XskTx>,
    /// The receive queues of `rx`'s sockets.
    queues: Vec<u32>,
    owners: Vec<Owner>,
    attachment: Arc<Attachment>,
}

// SAFETY: every pointer in a port points into mappings the port owns (its rings and UMEMs),
// and the port is used by one thread at a time (the worker it was moved to).
unsafe impl Send for XdpPort {}

impl XdpPort {
    /// Set AF_XDP up on `nic` with the program `program` makes for its XSK map attached in
    /// `mode`, a socket per receive queue.
    pub fn open(nic: &str, mode: XdpMode, program: impl FnOnce(RawFd) -> Vec<u8>) -> Result<XdpPort, XskError> {
        let index = u32::try_from(ifindex(nic).map_err(|e| XskError::Nic(e.to_string()))?).unwrap_or(0);
        let map = XskMap::new(MAX_QUEUES).map_err(XskError::Bpf)?;
        let prog = Program::load(ProgramKind::Xdp, &program(map.fd())).map_err(XskError::Bpf)?;
        // A program a previous run left (it outlives its process) goes first.
        let _ = rtnl::detach_xdp(nic, XdpMode::Driver);
        let _ = rtnl::detach_xdp(nic, XdpMode::Generic);
        rtnl::attach_xdp(nic, prog.fd(), mode).map_err(XskError::Attach)?;
        // Counted only now: attaching XDP can add receive queues (virtio_net takes queue
        // pairs it has spare for XDP's transmit, and receives on them too). A queue without
        // a socket would hand its frames to the kernel's stack, where they are lost.
        let queues = rx_queues(nic);
        if queues > MAX_QUEUES {
            let _ = rtnl::detach_xdp(nic, mode);
            return Err(XskError::Nic(format!(
                "{nic} receives on {queues} queues; netfw serves at most {MAX_QUEUES} (lower them with `ethtool -L {nic} combined {MAX_QUEUES}`)"
            )));
        }
        let mut owners = Vec::new();
        let mut rxs = Vec::new();
        let mut txs = Vec::new();
        for q in 0..queues {
            let opened = open_socket(nic, index, q).and_then(|(o, r, t)| map.set(q, r.fd).map(|()| (o, r, t)).map_err(XskError::Bpf));
            match opened {
                Ok((o, r, t)) => {
                    owners.push(o);
                    rxs.push(r);
                    txs.push(t);
                }
                Err(e) => {
                    let _ = rtnl::detach_xdp(nic, mode);
                    return Err(e);
                }
            }
        }
        let mut txs = txs.into_iter();
        let tx = txs.next().ok_or_else(|| XskError::Nic(format!("{nic} has no receive queue")))?;
        let csum_maybe_partial = mode == XdpMode::Generic && !super::backend::has_driver(nic);
        let attachment = Arc::new(Attachment { nic: nic.into(), mode, _map: map, _prog: prog });
        Ok(XdpPort {
            rx: XdpRx { sockets: rxs, csum_maybe_partial },
            tx,
            spare_tx: txs.collect(),
            queues: (0..queues).collect(),
            owners,
            attachment,
        })
    }

    /// Receive queues it has sockets on.
    pub fn queue_count(&self) -> usize {
        self.queues.len()
    }

    /// Split into `parts` ports (at most one per queue), one per worker thread: part `w` gets
    /// the sockets of queues `w`, `w + parts`, ... and transmits on queue `w`'s socket. The
    /// program stays attached until every part is gone.
    pub fn split(self, parts: usize) -> Vec<XdpPort> {
        let parts = parts.clamp(1, self.queues.len().max(1));
        let XdpPort { rx, tx, spare_tx, queues, owners, attachment } = self;
        let partial = rx.csum_maybe_partial;
        let mut txs: Vec<Option<XskTx>> = std::iter::once(tx).chain(spare_tx).map(Some).collect();
        let mut groups: Vec<(Vec<XskRx>, Vec<u32>, Vec<Owner>)> = (0..parts).map(|_| (Vec::new(), Vec::new(), Vec::new())).collect();
        for (i, ((r, q), o)) in rx.sockets.into_iter().zip(queues).zip(owners).enumerate() {
            if let Some(g) = groups.get_mut(i % parts) {
                g.0.push(r);
                g.1.push(q);
                g.2.push(o);
            }
        }
        let mut out = Vec::with_capacity(parts);
        for (w, (sockets, queues, owners)) in groups.into_iter().enumerate() {
            let Some(tx) = txs.get_mut(w).and_then(Option::take) else { continue };
            out.push(XdpPort {
                rx: XdpRx { sockets, csum_maybe_partial: partial },
                tx,
                spare_tx: Vec::new(),
                queues,
                owners,
                attachment: Arc::clone(&attachment),
            });
        }
        out
    }

    /// How the start line describes it.
    pub fn describe(&self) -> String {
        let n = self.rx.sockets.len();
        format!("AF_XDP ({} XDP, copy mode, {n} queue{})", self.attachment.mode.name(), if n == 1 { "" } else { "s" })
    }

    /// Its queues, as the start line lists them ("0,2").
    pub fn queue_list(&self) -> String {
        self.queues.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
    }
}

/// The most receive queues netfw opens sockets on (the XSK map's size).
const MAX_QUEUES: u32 = 256;

/// The NIC's receive queues in use (from sysfs; 1 if unknown).
fn rx_queues(nic: &str) -> u32 {
    std::fs::read_dir(format!("/sys/class/net/{nic}/queues"))
        .map(|d| d.flatten().filter(|e| e.file_name().to_string_lossy().starts_with("rx-")).count())
        .ok()
        .and_then(|n| u32::try_from(n).ok())
        .filter(|n| *n > 0)
        .unwrap_or(1)
}

impl Port for XdpPort {
    type Rx = XdpRx;
    type Tx = XskTx;
    fn halves(&mut self) -> (&mut XdpRx, &mut XskTx) {
        (&mut self.rx, &mut self.tx)
    }
    fn fds(&self) -> Vec<RawFd> {
        self.owners.iter().map(|o| o.fd.as_raw_fd()).collect()
    }
    fn kernel_drops(&mut self) -> std::io::Result<KernelDrops> {
        let mut total = KernelDrops::default();
        for r in &mut self.rx.sockets {
            let d = r.drops()?;
            total.ring_overflow += d.ring_overflow;
            total.oversize += d.oversize;
        }
        Ok(total)
    }
}
