//! The small XDP program that steers a NIC's frames to netfw's AF_XDP sockets, built here as
//! eBPF instructions (no compiler, no prebuilt object) and loaded with the bpf(2) system call,
//! with the XSK map it redirects through.
//!
//! The program: `return bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_PASS);` — every
//! frame of a receive queue that has a socket goes to that socket (ARP and ICMP too: netfw's
//! control stack answers them); a queue without one passes frames to the kernel.

use std::fmt;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_MAP_TYPE_XSKMAP: u32 = 17;
const BPF_PROG_TYPE_XDP: u32 = 6;
/// `union bpf_attr` in Linux 6.1.
const ATTR_SIZE: usize = 144;
/// `bpf_redirect_map`.
const HELPER_REDIRECT_MAP: i32 = 51;
const XDP_PASS: i32 = 2;
/// `rx_queue_index` in `struct xdp_md`.
const XDP_MD_RX_QUEUE_INDEX: i16 = 16;

/// Why the program or its map could not be made.
#[derive(Debug)]
pub enum BpfError {
    /// A bpf(2) command failed.
    Syscall {
        /// Which command.
        what: &'static str,
        /// errno.
        error: std::io::Error,
        /// The verifier's words, for a program it refused.
        log: String,
    },
}

impl fmt::Display for BpfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BpfError::Syscall { what, error, log } if log.is_empty() => write!(f, "bpf {what}: {error}"),
            BpfError::Syscall { what, error, log } => write!(f, "bpf {what}: {error}: {}", log.trim()),
        }
    }
}

impl std::error::Error for BpfError {}

/// A `union bpf_attr`, written field by field at the offsets of Linux 6.1's layout.
struct Attr([u8; ATTR_SIZE]);

impl Attr {
    fn new() -> Attr {
        Attr([0; ATTR_SIZE])
    }
    fn u32(&mut self, at: usize, v: u32) -> &mut Self {
        self.0[at..at + 4].copy_from_slice(&v.to_ne_bytes());
        self
    }
    fn u64(&mut self, at: usize, v: u64) -> &mut Self {
        self.0[at..at + 8].copy_from_slice(&v.to_ne_bytes());
        self
    }
    fn call(&mut self, cmd: libc::c_long, what: &'static str) -> Result<libc::c_long, BpfError> {
        // SAFETY: bpf(2) reads (and may write) `ATTR_SIZE` bytes of `self.0`; every pointer
        // written into it points at memory that outlives this call (the callers hold it).
        let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, self.0.as_mut_ptr(), ATTR_SIZE) };
        if r < 0 {
            Err(BpfError::Syscall { what, error: std::io::Error::last_os_error(), log: String::new() })
        } else {
            Ok(r)
        }
    }
}

fn owned(fd: libc::c_long) -> OwnedFd {
    // SAFETY: a descriptor bpf(2) just returned; nothing else owns it.
    unsafe { OwnedFd::from_raw_fd(RawFd::try_from(fd).unwrap_or(-1)) }
}

/// An XSK map: queue index → AF_XDP socket.
#[derive(Debug)]
pub struct XskMap(OwnedFd);

impl XskMap {
    /// A map for `queues` receive queues.
    pub fn new(queues: u32) -> Result<XskMap, BpfError> {
        let mut a = Attr::new();
        a.u32(0, BPF_MAP_TYPE_XSKMAP).u32(4, 4).u32(8, 4).u32(12, queues.max(1));
        a.0[28..32].copy_from_slice(b"xsks");
        Ok(XskMap(owned(a.call(BPF_MAP_CREATE, "create the XSK map")?)))
    }

    /// Steer queue `queue` to the socket `xsk`.
    pub fn set(&self, queue: u32, xsk: RawFd) -> Result<(), BpfError> {
        let key = queue;
        let value = u32::try_from(xsk).unwrap_or(u32::MAX);
        let mut a = Attr::new();
        a.u32(0, u32::try_from(self.0.as_raw_fd()).unwrap_or(u32::MAX))
            .u64(8, std::ptr::from_ref(&key) as u64)
            .u64(16, std::ptr::from_ref(&value) as u64)
            .u64(24, 0);
        a.call(BPF_MAP_UPDATE_ELEM, "put a socket in the XSK map").map(|_| ())
    }
}

/// One eBPF instruction: code, dst/src registers, offset, immediate.
fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> [u8; 8] {
    let mut i = [0u8; 8];
    i[0] = code;
    i[1] = (src << 4) | (dst & 0x0f);
    i[2..4].copy_from_slice(&off.to_le_bytes());
    i[4..8].copy_from_slice(&imm.to_le_bytes());
    i
}

/// The program's instructions, redirecting through map `map_fd`.
pub fn program(map_fd: RawFd) -> Vec<u8> {
    [
        insn(0x61, 2, 1, XDP_MD_RX_QUEUE_INDEX, 0), // r2 = ctx->rx_queue_index
        insn(0x18, 1, 1, 0, map_fd),                // r1 = the map (ld_imm64, BPF_PSEUDO_MAP_FD)
        insn(0x00, 0, 0, 0, 0),                     //      (its upper half)
        insn(0xb7, 3, 0, 0, XDP_PASS),              // r3 = XDP_PASS when no socket
        insn(0x85, 0, 0, 0, HELPER_REDIRECT_MAP),   // call bpf_redirect_map
        insn(0x95, 0, 0, 0, 0),                     // exit
    ]
    .concat()
}

/// The loaded program.
#[derive(Debug)]
pub struct XdpProgram(OwnedFd);

impl XdpProgram {
    /// Load the program for `map`.
    pub fn load(map: &XskMap) -> Result<XdpProgram, BpfError> {
        let code = program(map.0.as_raw_fd());
        let license = b"GPL\0";
        let mut log = vec![0u8; 4096];
        let mut a = Attr::new();
        a.u32(0, BPF_PROG_TYPE_XDP)
            .u32(4, u32::try_from(code.len() / 8).unwrap_or(0))
            .u64(8, code.as_ptr() as u64)
            .u64(16, license.as_ptr() as u64)
            .u32(24, 1)
            .u32(28, u32::try_from(log.len()).unwrap_or(0))
            .u64(32, log.as_mut_ptr() as u64);
        a.0[48..55].copy_from_slice(b"netfw_x");
        match a.call(BPF_PROG_LOAD, "load the XDP program") {
            Ok(fd) => Ok(XdpProgram(owned(fd))),
            Err(BpfError::Syscall { what, error, .. }) => {
                let text = String::from_utf8_lossy(log.split(|b| *b == 0).next().unwrap_or_default()).into_owned();
                Err(BpfError::Syscall { what, error, log: text })
            }
        }
    }

    /// Its descriptor (to attach it).
    pub fn fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_program_is_the_six_instructions_of_a_queue_redirect() {
        let p = program(7);
        assert_eq!(p.len(), 48);
        assert_eq!(&p[0..8], &[0x61, 0x12, 16, 0, 0, 0, 0, 0], "r2 = *(u32 *)(r1 + 16)");
        assert_eq!(&p[8..16], &[0x18, 0x11, 0, 0, 7, 0, 0, 0], "r1 = map fd 7 (pseudo map fd)");
        assert_eq!(&p[32..40], &[0x85, 0, 0, 0, 51, 0, 0, 0], "call bpf_redirect_map");
        assert_eq!(&p[40..48], &[0x95, 0, 0, 0, 0, 0, 0, 0], "exit");
    }
}
