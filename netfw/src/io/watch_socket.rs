//! ipvs mode's window on the RS-facing wire: a plain AF_PACKET socket on one NIC the kernel
//! owns, with a classic BPF filter so that only the few frames the health checker wants are
//! copied to it (the kernel forwards everything else without us): ARP, and IPv4 from a VIP
//! (replies to probes through the DR path, and a real server's replies that come back through
//! the director). Frames the box itself sends are not seen. Sends are whole Ethernet frames
//! (probes, ARP requests from the DIP). This is the control path: a syscall per frame is fine.

use std::fmt;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::nic::{ifindex, NicError};

const ETH_P_ALL: u16 = 0x0003;
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;
const PACKET_AUXDATA: libc::c_int = 8;
/// Most VIPs the filter names one by one; with more it passes all IPv4 (and the checker
/// reads what it does not need).
pub const FILTER_VIPS: usize = 200;

/// Why the socket could not be opened.
#[derive(Debug)]
pub enum WatchSocketError {
    /// The NIC is missing.
    Nic(NicError),
    /// A socket call failed.
    Os {
        /// Which step.
        step: &'static str,
        /// What the socket is for.
        purpose: &'static str,
        /// The NIC.
        nic: String,
        /// errno.
        error: std::io::Error,
    },
}

impl fmt::Display for WatchSocketError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WatchSocketError::Nic(e) => e.fmt(f),
            WatchSocketError::Os { step, purpose, nic, error } => write!(f, "{step} on {nic} for {purpose}: {error}"),
        }
    }
}

impl std::error::Error for WatchSocketError {}

/// One classic BPF instruction (`struct sock_filter`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Insn {
    code: u16,
    jt: u8,
    jf: u8,
    k: u32,
}

const LDH_ABS: u16 = 0x28;
const LD_W_ABS: u16 = 0x20;
const JEQ_K: u16 = 0x15;
const RET_K: u16 = 0x06;

/// The filter: ARP, or IPv4 whose source is one of `vips` (all IPv4 with more than
/// `FILTER_VIPS`).
pub fn filter(vips: &[Ipv4Addr]) -> Vec<Insn> {
    let vips = if vips.len() > FILTER_VIPS { &[][..] } else { vips };
    let n = u8::try_from(vips.len()).unwrap_or(u8::MAX);
    let i = |code, jt, jf, k| Insn { code, jt, jf, k };
    // 0: ethertype; 1: ARP → accept; 2: not IPv4 → drop; 3: source address; 4..4+n: each
    // VIP → accept; then drop; then accept.
    if vips.is_empty() {
        // 0: ethertype; 1: ARP → accept; 2: IPv4 → accept; 3: drop; 4: accept.
        return vec![i(LDH_ABS, 0, 0, 12), i(JEQ_K, 2, 0, 0x0806), i(JEQ_K, 1, 0, 0x0800), i(RET_K, 0, 0, 0), i(RET_K, 0, 0, 0x0004_0000)];
    }
    let accept_from = |at: u8| (4 + n + 1) - at - 1;
    let mut p = vec![i(LDH_ABS, 0, 0, 12), i(JEQ_K, accept_from(1), 0, 0x0806)];
    p.push(i(JEQ_K, 0, n + 1, 0x0800));
    p.push(i(LD_W_ABS, 0, 0, 26));
    for (j, v) in vips.iter().enumerate() {
        let at = 4 + u8::try_from(j).unwrap_or(u8::MAX);
        p.push(i(JEQ_K, accept_from(at), 0, u32::from(*v)));
    }
    p.push(i(RET_K, 0, 0, 0));
    p.push(i(RET_K, 0, 0, 0x0004_0000));
    p
}

/// The filter for the HA pair's adverts: IPv4 with protocol 112 (VRRP).
pub fn vrrp_filter() -> Vec<Insn> {
    const LDB_ABS: u16 = 0x30;
    let i = |code, jt, jf, k| Insn { code, jt, jf, k };
    // 0: ethertype; 1: not IPv4 → drop; 2: protocol; 3: VRRP → accept; 4: drop; 5: accept.
    vec![
        i(LDH_ABS, 0, 0, 12),
        i(JEQ_K, 0, 2, 0x0800),
        i(LDB_ABS, 0, 0, 23),
        i(JEQ_K, 1, 0, 112),
        i(RET_K, 0, 0, 0),
        i(RET_K, 0, 0, 0x0004_0000),
    ]
}

/// The `tp_status` of the PACKET_AUXDATA message among a recvmsg's control messages (each a
/// `cmsghdr`: length as a usize, level, type; then its data; aligned to a usize).
fn aux_status(control: &[u8]) -> Option<u32> {
    const W: usize = std::mem::size_of::<usize>();
    let mut at = 0;
    while let Some(h) = control.get(at..at + W + 8) {
        let len = usize::from_ne_bytes(h[..W].try_into().ok()?);
        let level = i32::from_ne_bytes(h[W..W + 4].try_into().ok()?);
        let ty = i32::from_ne_bytes(h[W + 4..W + 8].try_into().ok()?);
        if len < W + 8 {
            return None;
        }
        if level == libc::SOL_PACKET && ty == PACKET_AUXDATA {
            return control.get(at + W + 8..at + W + 12).and_then(|d| d.try_into().ok()).map(u32::from_ne_bytes);
        }
        at += len.div_ceil(W) * W;
    }
    None
}

/// A frame received.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Received {
    /// Its length (more than the buffer: it was cut short).
    pub len: usize,
    /// Its TCP/UDP checksum is not computed yet (from a local stack over a virtual NIC).
    pub csum_not_ready: bool,
}

/// The socket.
#[derive(Debug)]
pub struct WatchSocket {
    fd: OwnedFd,
}

impl WatchSocket {
    /// Open it on `nic`, seeing ARP and IPv4 from `vips`.
    pub fn open(nic: &str, vips: &[Ipv4Addr]) -> Result<WatchSocket, WatchSocketError> {
        Self::open_filtered(nic, &filter(vips), "the health checks")
    }

    /// Open it on `nic` for the HA pair's adverts: it sees VRRP only, and `nic` receives the
    /// VRRP group's multicast MAC while it lives.
    pub fn open_vrrp(nic: &str) -> Result<WatchSocket, WatchSocketError> {
        let s = Self::open_filtered(nic, &vrrp_filter(), "the HA pair's adverts")?;
        let index = ifindex(nic).map_err(WatchSocketError::Nic)?;
        let mut address = [0u8; 8];
        address[..6].copy_from_slice(&[0x01, 0x00, 0x5e, 0x00, 0x00, 0x12]);
        let mreq = libc::packet_mreq { mr_ifindex: index, mr_type: 0 /* PACKET_MR_MULTICAST */, mr_alen: 6, mr_address: address };
        // SAFETY: `mreq` is a live packet_mreq of the size passed.
        let r = unsafe {
            libc::setsockopt(
                s.fd(),
                libc::SOL_PACKET,
                1, // PACKET_ADD_MEMBERSHIP
                std::ptr::from_ref(&mreq).cast(),
                libc::socklen_t::try_from(std::mem::size_of::<libc::packet_mreq>()).unwrap_or(0),
            )
        };
        if r != 0 {
            let error = std::io::Error::last_os_error();
            return Err(WatchSocketError::Os {
                step: "PACKET_ADD_MEMBERSHIP",
                purpose: "the HA pair's adverts",
                nic: nic.to_string(),
                error,
            });
        }
        Ok(s)
    }

    fn open_filtered(nic: &str, prog: &[Insn], purpose: &'static str) -> Result<WatchSocket, WatchSocketError> {
        let os = |step| {
            let error = std::io::Error::last_os_error();
            WatchSocketError::Os { step, purpose, nic: nic.to_string(), error }
        };
        let index = ifindex(nic).map_err(WatchSocketError::Nic)?;
        // SAFETY: plain socket(2); the descriptor is owned below.
        let raw = unsafe {
            libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, i32::from(ETH_P_ALL.to_be()))
        };
        if raw < 0 {
            return Err(os("socket(AF_PACKET)"));
        }
        // SAFETY: `raw` is a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let fprog = libc::sock_fprog { len: u16::try_from(prog.len()).unwrap_or(u16::MAX), filter: prog.as_ptr().cast_mut().cast() };
        // SAFETY: `fprog` points at `prog`, alive across the call; the kernel copies it.
        let r = unsafe {
            libc::setsockopt(
                raw,
                libc::SOL_SOCKET,
                libc::SO_ATTACH_FILTER,
                std::ptr::from_ref(&fprog).cast(),
                u32::try_from(std::mem::size_of::<libc::sock_fprog>()).unwrap_or(0),
            )
        };
        if r != 0 {
            return Err(os("SO_ATTACH_FILTER"));
        }
        let one: libc::c_int = 1;
        // SAFETY: an int option.
        let _ = unsafe { libc::setsockopt(raw, libc::SOL_PACKET, PACKET_IGNORE_OUTGOING, std::ptr::from_ref(&one).cast(), 4) };
        // Each frame's status: a frame from a local stack over a virtual NIC may arrive with
        // its L4 checksum not yet computed.
        // SAFETY: an int option.
        if unsafe { libc::setsockopt(raw, libc::SOL_PACKET, PACKET_AUXDATA, std::ptr::from_ref(&one).cast(), 4) } != 0 {
            return Err(os("PACKET_AUXDATA"));
        }
        // SAFETY: sockaddr_ll is plain old data; zeroed is a valid value.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = u16::try_from(libc::AF_PACKET).unwrap_or(17);
        sll.sll_protocol = ETH_P_ALL.to_be();
        sll.sll_ifindex = index;
        // SAFETY: `sll` is a valid sockaddr_ll of the size passed.
        let r = unsafe {
            libc::bind(raw, std::ptr::from_ref(&sll).cast(), u32::try_from(std::mem::size_of::<libc::sockaddr_ll>()).unwrap_or(0))
        };
        if r != 0 {
            return Err(os("bind"));
        }
        let s = WatchSocket { fd };
        // Frames that arrived between socket(2) and the filter: read and dropped.
        let mut buf = [0u8; 2048];
        while s.recv(&mut buf).is_some() {}
        Ok(s)
    }

    /// The next frame into `buf`, or `None` when none waits. A frame longer than `buf` is
    /// cut short (its `len` says how long it was).
    pub fn recv(&self, buf: &mut [u8]) -> Option<Received> {
        let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
        // Room for one PACKET_AUXDATA message (a cmsghdr and a tpacket_auxdata).
        let mut control = [0u8; 64];
        // SAFETY: msghdr is plain old data; zeroed is a valid value.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &raw mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = control.len();
        // SAFETY: `msg` points at `iov` (over `buf`) and `control`, all alive across the call.
        let n = unsafe { libc::recvmsg(self.fd.as_raw_fd(), &raw mut msg, libc::MSG_DONTWAIT | libc::MSG_TRUNC) };
        let len = usize::try_from(n).ok()?;
        let csum_not_ready =
            aux_status(control.get(..msg.msg_controllen).unwrap_or_default()).is_some_and(|st| st & libc::TP_STATUS_CSUMNOTREADY != 0);
        Some(Received { len, csum_not_ready })
    }

    /// Send one whole Ethernet frame; false if the kernel did not take it.
    pub fn send(&self, frame: &[u8]) -> bool {
        // SAFETY: `frame` is readable for its length.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), libc::MSG_DONTWAIT) };
        usize::try_from(n).is_ok_and(|n| n == frame.len())
    }

    /// The descriptor, for poll(2).
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Run a classic BPF program over `pkt` as the kernel would (the few opcodes we use).
    fn run(p: &[Insn], pkt: &[u8]) -> u32 {
        let (mut pc, mut a) = (0usize, 0u32);
        loop {
            let i = p[pc];
            match i.code {
                LDH_ABS => a = u32::from(u16::from_be_bytes([pkt[i.k as usize], pkt[i.k as usize + 1]])),
                LD_W_ABS => a = u32::from_be_bytes(pkt[i.k as usize..i.k as usize + 4].try_into().unwrap()),
                0x30 => a = u32::from(pkt[i.k as usize]),
                JEQ_K => {
                    pc += usize::from(if a == i.k { i.jt } else { i.jf });
                }
                RET_K => return i.k,
                _ => panic!("opcode {:#x}", i.code),
            }
            pc += 1;
        }
    }

    fn frame(ethertype: u16, src: [u8; 4]) -> Vec<u8> {
        let mut f = vec![0u8; 60];
        f[12..14].copy_from_slice(&ethertype.to_be_bytes());
        f[26..30].copy_from_slice(&src);
        f
    }

    #[test]
    fn the_checksum_status_is_read_from_the_aux_data_and_bad_control_data_is_none() {
        let w = std::mem::size_of::<usize>();
        let mut c = vec![0u8; w + 8 + 20];
        c[..w].copy_from_slice(&(w + 8 + 20).to_ne_bytes());
        c[w..w + 4].copy_from_slice(&libc::SOL_PACKET.to_ne_bytes());
        c[w + 4..w + 8].copy_from_slice(&PACKET_AUXDATA.to_ne_bytes());
        c[w + 8..w + 12].copy_from_slice(&libc::TP_STATUS_CSUMNOTREADY.to_ne_bytes());
        assert_eq!(aux_status(&c), Some(libc::TP_STATUS_CSUMNOTREADY));
        assert_eq!(aux_status(&c[..w + 10]), None, "cut short");
        c[..w].copy_from_slice(&0usize.to_ne_bytes());
        assert_eq!(aux_status(&c), None, "a zero length does not loop");
        assert_eq!(aux_status(&[]), None);
    }

    #[test]
    fn the_vrrp_filter_passes_ipv4_vrrp_only() {
        let p = vrrp_filter();
        let mut vrrp = frame(0x0800, [198, 18, 0, 3]);
        vrrp[23] = 112;
        assert_ne!(run(&p, &vrrp), 0);
        let mut tcp = vrrp.clone();
        tcp[23] = 6;
        assert_eq!(run(&p, &tcp), 0);
        let mut arp = frame(0x0806, [0; 4]);
        arp[23] = 112;
        assert_eq!(run(&p, &arp), 0, "byte 23 of an ARP frame is not a protocol");
    }

    #[test]
    fn the_filter_passes_arp_and_ipv4_from_a_vip_only() {
        let vips = [Ipv4Addr::new(203, 0, 113, 10), Ipv4Addr::new(203, 0, 113, 11)];
        let p = filter(&vips);
        assert_ne!(run(&p, &frame(0x0806, [0; 4])), 0, "ARP");
        assert_ne!(run(&p, &frame(0x0800, [203, 0, 113, 10])), 0, "from the first VIP");
        assert_ne!(run(&p, &frame(0x0800, [203, 0, 113, 11])), 0, "from the second VIP");
        assert_eq!(run(&p, &frame(0x0800, [198, 18, 0, 11])), 0, "from a RIP");
        assert_eq!(run(&p, &frame(0x86dd, [203, 0, 113, 10])), 0, "IPv6");
        let many: Vec<Ipv4Addr> = (0..=u32::try_from(FILTER_VIPS).unwrap()).map(|i| Ipv4Addr::from(0xcb00_7100 + i)).collect();
        let all = filter(&many);
        assert_ne!(run(&all, &frame(0x0800, [198, 18, 0, 11])), 0, "with too many VIPs to name, all IPv4");
        assert_eq!(run(&all, &frame(0x86dd, [0; 4])), 0);
        assert_ne!(run(&all, &frame(0x0806, [0; 4])), 0, "and ARP");
        let most: Vec<Ipv4Addr> = many[..FILTER_VIPS].to_vec();
        let p = filter(&most);
        assert_ne!(run(&p, &frame(0x0800, most[FILTER_VIPS - 1].octets())), 0, "the last VIP named");
        assert_ne!(run(&p, &frame(0x0806, [0; 4])), 0);
        assert_eq!(run(&p, &frame(0x0800, [198, 18, 0, 11])), 0);
    }
}
