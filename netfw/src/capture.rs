//! Packet capture for the operator (seed 001's troubleshooting is tcpdump on the director):
//! which frames (`Filter`: everything, a host, a port, ARP only), how many and for how long
//! (`Limits`), written as a classic pcap (`pcap-file`, Ethernet, microseconds) that `tcpdump
//! -r` reads. Bounded: at most `MAX_PACKETS`, `MAX_SECONDS` and `MAX_BYTES`, each frame cut at
//! `SNAPLEN`.
//!
//! Two engines write the same files:
//! - the kernel engine captures a NIC the kernel owns (the management NIC, and every NIC in
//!   ipvs mode) on an AF_PACKET socket of its own, in both directions, beside whatever else
//!   uses the NIC: it reads copies and changes nothing on the forwarding path;
//! - the forwarder's taps (`begin`, `offer`, `collect`) see what netfw receives and sends on
//!   its dedicated NICs (with AF_XDP the kernel never sees those frames). While no capture
//!   runs, a frame costs one relaxed load of `TAPPING` and a branch; while one runs, a frame
//!   on a tapped NIC takes a lock and, if it passes the filter, a copy.
//!
//! The kernel forwards established flows itself (`io::kernel_flows`), out of the taps' sight:
//! while a capture runs, the flows its filter matches (`kernel_hold`, `Filter::holds`) are
//! held back from the kernel and every frame of theirs comes to netfw, so the file shows each
//! flow whole; the other flows stay in the kernel, at its speed (`vm-bench`'s
//! `forwarder+capture` row measures it).

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pcap_file::pcap::{PcapPacket, PcapWriter};

/// Most packets in one capture.
pub const MAX_PACKETS: u32 = 100_000;
/// Longest capture.
pub const MAX_SECONDS: u32 = 60;
/// Most bytes of one capture file.
pub const MAX_BYTES: usize = 16 << 20;
/// Bytes kept of each frame.
pub const SNAPLEN: usize = 2048;

/// Which frames a capture keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Filter {
    /// Every frame.
    All,
    /// IPv4 to or from this address, or ARP about it.
    Host(Ipv4Addr),
    /// TCP or UDP with this source or destination port.
    Port(u16),
    /// ARP only.
    Arp,
}

/// Why a capture could not be made.
#[derive(Debug, PartialEq, Eq)]
pub enum CaptureError {
    /// The request is not one the box takes.
    Invalid(String),
    /// The NIC is not there, or the kernel refused a socket.
    Kernel(String),
}

impl std::fmt::Display for CaptureError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CaptureError::Invalid(m) => f.write_str(m),
            CaptureError::Kernel(m) => write!(f, "the capture could not start: {m}"),
        }
    }
}

impl Filter {
    /// From the page's words: `all`, `host` with an address, `port` with a number, `arp`.
    pub fn parse(kind: &str, value: Option<&str>) -> Result<Filter, CaptureError> {
        let v = value.map(str::trim).unwrap_or_default();
        match kind {
            "all" => Ok(Filter::All),
            "arp" => Ok(Filter::Arp),
            "host" => v
                .parse()
                .map(Filter::Host)
                .map_err(|_| CaptureError::Invalid(format!("filter host: \"{}\" is not an IPv4 address", v.escape_debug()))),
            "port" => v
                .parse()
                .ok()
                .filter(|p| *p != 0)
                .map(Filter::Port)
                .ok_or_else(|| CaptureError::Invalid(format!("filter port: \"{}\" is not a port (1-65535)", v.escape_debug()))),
            other => Err(CaptureError::Invalid(format!("filter \"{}\": one of all, host, port, arp", other.escape_debug()))),
        }
    }

    /// Whether frames of the flow `client:cport` → `vip:vport` can pass (what the kernel's
    /// path must leave to netfw while this capture runs).
    pub fn holds(&self, client: Ipv4Addr, vip: Ipv4Addr, cport: u16, vport: u16) -> bool {
        match *self {
            Filter::All => true,
            Filter::Host(h) => client == h || vip == h,
            Filter::Port(p) => cport == p || vport == p,
            Filter::Arp => false,
        }
    }

    /// Whether `frame` (Ethernet) passes.
    pub fn matches(&self, frame: &[u8]) -> bool {
        let ethertype = frame.get(12..14).map(|t| u16::from_be_bytes([t[0], t[1]]));
        let ip4 = |off: usize| frame.get(off..off + 4).map(|a| Ipv4Addr::new(a[0], a[1], a[2], a[3]));
        match (self, ethertype) {
            (Filter::All, _) => true,
            (Filter::Arp, Some(0x0806)) => true,
            // ARP: sender and target protocol addresses.
            (Filter::Host(h), Some(0x0806)) => ip4(28) == Some(*h) || ip4(38) == Some(*h),
            (Filter::Host(h), Some(0x0800)) => ip4(26) == Some(*h) || ip4(30) == Some(*h),
            (Filter::Port(p), Some(0x0800)) => {
                let ihl = usize::from(frame.get(14).map_or(0, |b| b & 0x0f)) * 4;
                let proto = frame.get(23).copied();
                let frag = frame.get(20..22).is_some_and(|f| u16::from_be_bytes([f[0], f[1]]) & 0x1fff != 0);
                let ports = frame.get(14 + ihl..18 + ihl).map(|b| (u16::from_be_bytes([b[0], b[1]]), u16::from_be_bytes([b[2], b[3]])));
                matches!(proto, Some(6 | 17)) && !frag && ihl >= 20 && ports.is_some_and(|(s, d)| s == *p || d == *p)
            }
            _ => false,
        }
    }
}

/// How much to capture.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Stop after this many frames.
    pub packets: u32,
    /// Stop after this long.
    pub seconds: u32,
}

impl Limits {
    /// Checked against the box's bounds.
    pub fn new(packets: u32, seconds: u32) -> Result<Limits, CaptureError> {
        if !(1..=MAX_PACKETS).contains(&packets) {
            return Err(CaptureError::Invalid(format!("packets: 1 to {MAX_PACKETS}")));
        }
        if !(1..=MAX_SECONDS).contains(&seconds) {
            return Err(CaptureError::Invalid(format!("seconds: 1 to {MAX_SECONDS}")));
        }
        Ok(Limits { packets, seconds })
    }
}

/// A pcap file being written in memory, within `MAX_BYTES`.
#[derive(Debug)]
pub struct Pcap {
    writer: PcapWriter<Vec<u8>>,
    packets: u32,
    bytes: usize,
}

impl Pcap {
    /// An empty file (its header only).
    pub fn new() -> Pcap {
        // Writing to a Vec cannot fail.
        let writer = PcapWriter::new(Vec::with_capacity(64 * 1024)).unwrap_or_else(|_| unreachable!("a Vec takes every write"));
        Pcap { writer, packets: 0, bytes: 24 }
    }

    /// Add a frame seen at `at` (since the Unix epoch); false once the file is full.
    pub fn add(&mut self, at: Duration, frame: &[u8], orig_len: usize) -> bool {
        let kept = &frame[..frame.len().min(SNAPLEN)];
        if self.bytes + 16 + kept.len() > MAX_BYTES {
            return false;
        }
        let packet = PcapPacket::new(at, u32::try_from(orig_len).unwrap_or(u32::MAX), kept);
        let ok = self.writer.write_packet(&packet).is_ok();
        if ok {
            self.packets += 1;
            self.bytes += 16 + kept.len();
        }
        ok
    }

    /// Frames in it.
    pub fn packets(&self) -> u32 {
        self.packets
    }

    /// The file's bytes.
    pub fn into_bytes(self) -> Vec<u8> {
        self.writer.into_writer()
    }
}

impl Default for Pcap {
    fn default() -> Self {
        Pcap::new()
    }
}

/// The VIP-facing NIC's bit in a tap mask (one-arm: the one NIC).
pub const VIP_NIC: u8 = 1;
/// The RS-facing NIC's bit.
pub const RS_NIC: u8 = 2;

/// The NICs being tapped now (a mask of `VIP_NIC`, `RS_NIC`); 0 while no capture runs.
static TAPPING: AtomicU8 = AtomicU8::new(0);

#[derive(Debug)]
struct Session {
    mask: u8,
    filter: Filter,
    packets: u32,
    end: Instant,
    pcap: Pcap,
    full: bool,
}

static SESSION: Mutex<Option<Session>> = Mutex::new(None);

fn session() -> MutexGuard<'static, Option<Session>> {
    SESSION.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Whether frames of the NIC with bit `nic` are wanted now (the per-frame check).
#[inline]
pub fn tapping(nic: u8) -> bool {
    TAPPING.load(Ordering::Relaxed) & nic != 0
}

/// A frame netfw received or sends on the NIC with bit `nic`, while `tapping(nic)`.
pub fn offer(nic: u8, frame: &[u8]) {
    let mut g = session();
    let Some(s) = g.as_mut().filter(|s| s.mask & nic != 0 && !s.full) else { return };
    if !s.filter.matches(frame) {
        return;
    }
    let at = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    if !s.pcap.add(at, frame, frame.len()) || s.pcap.packets() >= s.packets {
        s.full = true;
        TAPPING.store(0, Ordering::Relaxed);
    }
}

/// A finished capture nobody collected this long after its end gives way to a new one.
const UNCOLLECTED: Duration = Duration::from_secs(30);

/// Start tapping the NICs in `mask`; refused while another capture runs (or waits, done, to
/// be collected).
pub fn begin(mask: u8, filter: Filter, limits: Limits) -> Result<(), CaptureError> {
    let mut g = session();
    if g.as_ref().is_some_and(|s| Instant::now() < s.end + UNCOLLECTED) {
        return Err(CaptureError::Invalid("another capture is running: one at a time".into()));
    }
    let end = Instant::now() + Duration::from_secs(u64::from(limits.seconds));
    *g = Some(Session { mask, filter, packets: limits.packets, end, pcap: Pcap::new(), full: false });
    TAPPING.store(mask, Ordering::Relaxed);
    Ok(())
}

/// The capture's file once it is done (its frames, its time or its room used up); `None`
/// while it runs or when none does.
pub fn collect() -> Option<Pcap> {
    let mut g = session();
    let due = g.as_ref().is_some_and(|s| s.full || Instant::now() >= s.end);
    if !due {
        return None;
    }
    TAPPING.store(0, Ordering::Relaxed);
    g.take().map(|s| s.pcap)
}

/// Whether a forwarder capture is running.
pub fn running() -> bool {
    session().is_some()
}

/// The filter of the capture running now (not yet full or over) whose flows the kernel must
/// leave to netfw; `None` when no capture runs or it takes only ARP (never forwarded in the
/// kernel). Asked when flows are handed to the kernel and a few times a second, not per frame.
pub fn kernel_hold() -> Option<Filter> {
    session().as_ref().filter(|s| !s.full && Instant::now() < s.end && s.filter != Filter::Arp).map(|s| s.filter)
}

fn os(what: &str) -> CaptureError {
    CaptureError::Kernel(format!("{what}: {}", std::io::Error::last_os_error()))
}

/// Capture on `nic` (a NIC the kernel owns) until `limits` or the file is full.
pub fn capture_kernel_nic(nic: &str, filter: Filter, limits: Limits) -> Result<Pcap, CaptureError> {
    let name = std::ffi::CString::new(nic).map_err(|_| CaptureError::Invalid(format!("no NIC named {nic:?}")))?;
    // SAFETY: `name` is a NUL-terminated string.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if ifindex == 0 {
        return Err(CaptureError::Invalid(format!("no NIC named {nic:?} on this box")));
    }
    let all = u16::try_from(libc::ETH_P_ALL).unwrap_or(3).to_be();
    // SAFETY: socket(2); the result is checked.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, i32::from(all)) };
    if fd < 0 {
        return Err(os("AF_PACKET socket"));
    }
    // SAFETY: `fd` is a socket we own; from here the OwnedFd closes it.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: an all-zero sockaddr_ll is valid; the fields that matter are set below.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = u16::try_from(libc::AF_PACKET).unwrap_or(17);
    addr.sll_protocol = all;
    addr.sll_ifindex = i32::try_from(ifindex).unwrap_or(0);
    let len = libc::socklen_t::try_from(std::mem::size_of::<libc::sockaddr_ll>()).unwrap_or(0);
    // SAFETY: `addr` is a valid sockaddr_ll of `len` bytes.
    if unsafe { libc::bind(sock.as_raw_fd(), (&raw const addr).cast(), len) } != 0 {
        return Err(os(&format!("bind to {nic}")));
    }
    let tick = libc::timeval { tv_sec: 0, tv_usec: 200_000 };
    let tlen = libc::socklen_t::try_from(std::mem::size_of::<libc::timeval>()).unwrap_or(0);
    // SAFETY: `tick` lives across the call; the length is its size.
    unsafe { libc::setsockopt(sock.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVTIMEO, (&raw const tick).cast(), tlen) };
    let end = Instant::now() + Duration::from_secs(u64::from(limits.seconds));
    let mut pcap = Pcap::new();
    let mut buf = vec![0u8; SNAPLEN];
    while pcap.packets() < limits.packets && Instant::now() < end {
        // SAFETY: `buf` is writable for its length; MSG_TRUNC makes the result the frame's
        // whole length even where `buf` held only its start.
        let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), libc::MSG_TRUNC) };
        let Ok(orig) = usize::try_from(n) else { continue }; // the tick, or EINTR
        let frame = &buf[..orig.min(buf.len())];
        if filter.matches(frame) {
            let at = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
            if !pcap.add(at, frame, orig) {
                break;
            }
        }
    }
    Ok(pcap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_capture_holds_back_from_the_kernel_only_the_flows_its_filter_matches() {
        let (client, vip, other) = (Ipv4Addr::new(198, 51, 100, 7), Ipv4Addr::new(203, 0, 113, 10), Ipv4Addr::new(198, 51, 100, 8));
        assert!(Filter::All.holds(client, vip, 40000, 80));
        assert!(Filter::Host(client).holds(client, vip, 40000, 80));
        assert!(Filter::Host(vip).holds(other, vip, 40000, 80));
        assert!(!Filter::Host(client).holds(other, vip, 40000, 80));
        assert!(Filter::Port(80).holds(other, vip, 40000, 80));
        assert!(Filter::Port(40000).holds(client, vip, 40000, 80));
        assert!(!Filter::Port(443).holds(client, vip, 40000, 80));
        assert!(!Filter::Arp.holds(client, vip, 40000, 80), "ARP is never forwarded in the kernel");
    }

    fn arp_request(sender: [u8; 4], target: [u8; 4]) -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend([2, 0, 0, 0, 0xd0, 2, 0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1, 2, 0, 0, 0, 0xd0, 2]);
        f.extend(sender);
        f.extend([0; 6]);
        f.extend(target);
        f
    }

    fn tcp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00, 0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0];
        f.extend(src);
        f.extend(dst);
        f.extend(sport.to_be_bytes());
        f.extend(dport.to_be_bytes());
        f.extend([0; 16]);
        f
    }

    #[test]
    fn filters_pick_what_the_operator_asked_for() {
        let arp = arp_request([198, 18, 0, 2], [198, 18, 0, 11]);
        let web = tcp([198, 51, 100, 2], [203, 0, 113, 10], 40000, 80);
        let rip: Ipv4Addr = "198.18.0.11".parse().unwrap();
        assert!(Filter::Arp.matches(&arp) && !Filter::Arp.matches(&web));
        assert!(Filter::Host(rip).matches(&arp), "ARP about the host");
        assert!(Filter::Host("203.0.113.10".parse().unwrap()).matches(&web));
        assert!(!Filter::Host(rip).matches(&web));
        assert!(Filter::Port(80).matches(&web) && Filter::Port(40000).matches(&web) && !Filter::Port(443).matches(&web));
        assert!(!Filter::Port(80).matches(&arp));
        for bad in [&b""[..], &[0u8; 13], &web[..20], &web[..35]] {
            let _ = (Filter::Port(80).matches(bad), Filter::Host(rip).matches(bad), Filter::Arp.matches(bad));
        }
        assert_eq!(Filter::parse("host", Some(" 198.18.0.11 ")), Ok(Filter::Host(rip)));
        assert!(Filter::parse("port", Some("0")).is_err_and(|e| e.to_string().contains("not a port")));
        assert!(Filter::parse("vlan", None).is_err_and(|e| e.to_string().contains("one of all, host, port, arp")));
        assert!(Limits::new(0, 10).is_err() && Limits::new(10, 61).is_err() && Limits::new(10, 10).is_ok());
    }

    #[test]
    fn taps_take_only_their_nics_frames_until_the_count_and_one_capture_at_a_time() {
        let arp = arp_request([198, 18, 0, 2], [198, 18, 0, 11]);
        assert!(!tapping(RS_NIC));
        begin(RS_NIC, Filter::Arp, Limits::new(2, 60).unwrap()).unwrap();
        assert!(begin(VIP_NIC, Filter::All, Limits::new(2, 60).unwrap()).is_err_and(|e| e.to_string().contains("one at a time")));
        assert!(tapping(RS_NIC) && !tapping(VIP_NIC));
        offer(RS_NIC, &tcp([1, 2, 3, 4], [5, 6, 7, 8], 1, 2)); // not ARP
        offer(VIP_NIC, &arp); // not tapped
        offer(RS_NIC, &arp);
        assert!(collect().is_none(), "one frame of two: still running");
        offer(RS_NIC, &arp);
        assert!(!tapping(RS_NIC), "the count is reached: the taps are off");
        let pcap = collect().expect("done");
        assert_eq!(pcap.packets(), 2);
        assert!(!running() && collect().is_none());
    }

    #[test]
    fn the_file_is_a_pcap_that_reads_back_and_stays_within_its_bound() {
        let mut p = Pcap::new();
        let arp = arp_request([198, 18, 0, 2], [198, 18, 0, 11]);
        assert!(p.add(Duration::from_millis(1_500), &arp, arp.len()));
        let big = vec![0u8; 9000];
        assert!(p.add(Duration::from_secs(2), &big, big.len()), "a merged frame is cut at the snap length");
        let bytes = p.into_bytes();
        let mut r = pcap_file::pcap::PcapReader::new(&bytes[..]).unwrap();
        let first = r.next_packet().unwrap().unwrap();
        assert_eq!((first.timestamp, first.data.len()), (Duration::from_millis(1_500), arp.len()));
        let second = r.next_packet().unwrap().unwrap();
        assert_eq!((second.orig_len, second.data.len()), (9000, SNAPLEN));
        let mut full = Pcap::new();
        let mut n = 0;
        while full.add(Duration::ZERO, &big, big.len()) {
            n += 1;
        }
        assert!(n > 0 && full.into_bytes().len() <= MAX_BYTES);
    }
}
