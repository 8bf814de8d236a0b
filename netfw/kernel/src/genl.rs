//! Netlink messages for generic netlink families: a builder that writes headers and
//! attributes (nested included) into a buffer, and a parser that walks attributes without
//! trusting any length the kernel sent.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// NLM_F_REQUEST
pub const F_REQUEST: u16 = 0x1;
/// NLM_F_ACK
pub const F_ACK: u16 = 0x4;
/// NLM_F_DUMP
pub const F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLA_F_NESTED: u16 = 0x8000;

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Builds one generic netlink request.
#[derive(Debug)]
pub struct Msg {
    buf: Vec<u8>,
    nests: Vec<usize>,
}

impl Msg {
    /// A message for `family` with command `cmd` (genl version 1) and netlink `flags`.
    pub fn new(family: u16, cmd: u8, flags: u16) -> Msg {
        let mut buf = vec![0u8; 16];
        buf[4..6].copy_from_slice(&family.to_ne_bytes());
        buf[6..8].copy_from_slice(&flags.to_ne_bytes());
        buf.extend_from_slice(&[cmd, 1, 0, 0]);
        Msg { buf, nests: Vec::new() }
    }

    /// Append an attribute.
    pub fn put(&mut self, kind: u16, data: &[u8]) -> &mut Self {
        let len = 4 + data.len();
        self.buf.extend_from_slice(&u16::try_from(len).unwrap_or(u16::MAX).to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.buf.resize(align4(self.buf.len()), 0);
        self
    }
    /// u16 attribute (host order).
    pub fn u16(&mut self, kind: u16, v: u16) -> &mut Self {
        self.put(kind, &v.to_ne_bytes())
    }
    /// u32 attribute (host order).
    pub fn u32(&mut self, kind: u16, v: u32) -> &mut Self {
        self.put(kind, &v.to_ne_bytes())
    }
    /// NUL-terminated string attribute.
    pub fn str(&mut self, kind: u16, s: &str) -> &mut Self {
        let mut b = s.as_bytes().to_vec();
        b.push(0);
        self.put(kind, &b)
    }
    /// Open a nested attribute; close it with `end`.
    pub fn begin(&mut self, kind: u16) -> &mut Self {
        self.nests.push(self.buf.len());
        self.buf.extend_from_slice(&[0, 0]);
        self.buf.extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
        self
    }
    /// Close the innermost nested attribute.
    pub fn end(&mut self) -> &mut Self {
        if let Some(at) = self.nests.pop() {
            let len = u16::try_from(self.buf.len() - at).unwrap_or(u16::MAX);
            self.buf[at..at + 2].copy_from_slice(&len.to_ne_bytes());
        }
        self
    }
    /// The finished bytes, with the length and sequence number filled in.
    pub fn finish(&mut self, seq: u32) -> &[u8] {
        let len = u32::try_from(self.buf.len()).unwrap_or(u32::MAX);
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        self.buf[8..12].copy_from_slice(&seq.to_ne_bytes());
        &self.buf
    }
}

/// One attribute of a received message.
#[derive(Debug, Clone, Copy)]
pub struct Attr<'a> {
    /// Type, without the nested/byte-order flags.
    pub kind: u16,
    /// Payload.
    pub data: &'a [u8],
}

impl<'a> Attr<'a> {
    /// u16 payload, if it is one.
    pub fn u16(&self) -> Option<u16> {
        Some(u16::from_ne_bytes(self.data.get(0..2)?.try_into().ok()?))
    }
    /// u32 payload.
    pub fn u32(&self) -> Option<u32> {
        Some(u32::from_ne_bytes(self.data.get(0..4)?.try_into().ok()?))
    }
    /// u64 payload.
    pub fn u64(&self) -> Option<u64> {
        Some(u64::from_ne_bytes(self.data.get(0..8)?.try_into().ok()?))
    }
    /// String payload (up to the first NUL).
    pub fn string(&self) -> String {
        String::from_utf8_lossy(self.data.split(|b| *b == 0).next().unwrap_or_default()).into_owned()
    }
    /// The attributes nested in this one.
    pub fn nested(&self) -> Attrs<'a> {
        Attrs(self.data)
    }
}

/// An iterator over attributes; stops at the first malformed one.
#[derive(Debug, Clone, Copy)]
pub struct Attrs<'a>(pub &'a [u8]);

impl<'a> Iterator for Attrs<'a> {
    type Item = Attr<'a>;
    fn next(&mut self) -> Option<Attr<'a>> {
        let b = self.0;
        let len = usize::from(u16::from_ne_bytes(b.get(0..2)?.try_into().ok()?));
        let kind = u16::from_ne_bytes(b.get(2..4)?.try_into().ok()?) & 0x3fff;
        if len < 4 {
            self.0 = &[];
            return None;
        }
        let data = b.get(4..len)?;
        self.0 = b.get(align4(len).min(b.len())..).unwrap_or_default();
        Some(Attr { kind, data })
    }
}

impl<'a> Attrs<'a> {
    /// The first attribute of a type.
    pub fn get(self, kind: u16) -> Option<Attr<'a>> {
        self.into_iter().find(|a| a.kind == kind)
    }
}

/// A generic netlink socket.
#[derive(Debug)]
pub struct Socket {
    fd: OwnedFd,
    seq: u32,
}

/// A received generic netlink message: its command and attributes.
#[derive(Debug, Clone)]
pub struct Reply {
    /// genl command.
    pub cmd: u8,
    /// The attribute bytes (after the genl header).
    pub attrs: Vec<u8>,
}

impl Socket {
    /// Open NETLINK_GENERIC.
    pub fn open() -> io::Result<Socket> {
        // SAFETY: plain socket(2).
        let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_GENERIC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor we own.
        Ok(Socket { fd: unsafe { OwnedFd::from_raw_fd(fd) }, seq: 1 })
    }

    /// Send a request and collect its replies (all parts of a dump) until the ACK or DONE.
    /// A kernel error comes back as `Err` with its errno.
    pub fn request(&mut self, msg: &mut Msg) -> io::Result<Vec<Reply>> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let bytes = msg.finish(seq);
        // SAFETY: sending a buffer we own to the kernel (nl_pid 0 by default for send()).
        let n = unsafe { libc::send(self.fd.as_raw_fd(), bytes.as_ptr().cast(), bytes.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut out = Vec::new();
        let mut buf = vec![0u8; 65536];
        loop {
            // SAFETY: receiving into a buffer we own, of its length.
            let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            let mut rest = buf.get(..usize::try_from(n).unwrap_or(0)).unwrap_or_default();
            while rest.len() >= 16 {
                let len = u32::from_ne_bytes(rest[0..4].try_into().unwrap_or_default()) as usize;
                let kind = u16::from_ne_bytes(rest[4..6].try_into().unwrap_or_default());
                let mseq = u32::from_ne_bytes(rest[8..12].try_into().unwrap_or_default());
                let Some(m) = rest.get(..len.max(16)) else { break };
                if mseq == seq {
                    match kind {
                        NLMSG_DONE => return Ok(out),
                        NLMSG_ERROR => {
                            let code = i32::from_ne_bytes(m.get(16..20).and_then(|b| b.try_into().ok()).unwrap_or_default());
                            return if code == 0 { Ok(out) } else { Err(io::Error::from_raw_os_error(-code)) };
                        }
                        _ => {
                            if let Some(g) = m.get(16..20) {
                                out.push(Reply { cmd: g[0], attrs: m.get(20..).unwrap_or_default().to_vec() });
                            }
                        }
                    }
                }
                rest = rest.get(align4(len.max(16)).min(rest.len())..).unwrap_or_default();
            }
        }
    }

    /// Resolve a generic netlink family by name.
    pub fn family(&mut self, name: &str) -> io::Result<u16> {
        const GENL_ID_CTRL: u16 = 0x10;
        const CTRL_CMD_GETFAMILY: u8 = 3;
        const CTRL_ATTR_FAMILY_ID: u16 = 1;
        const CTRL_ATTR_FAMILY_NAME: u16 = 2;
        let mut m = Msg::new(GENL_ID_CTRL, CTRL_CMD_GETFAMILY, F_REQUEST | F_ACK);
        m.str(CTRL_ATTR_FAMILY_NAME, name);
        let replies = self.request(&mut m)?;
        replies
            .iter()
            .find_map(|r| Attrs(&r.attrs).get(CTRL_ATTR_FAMILY_ID)?.u16())
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no generic netlink family {name}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_attributes_round_trip_and_bad_lengths_stop_the_walk() {
        let mut m = Msg::new(0x20, 1, F_REQUEST);
        m.begin(1).u16(1, 2).str(6, "rr").end().u32(4, 900);
        let bytes = m.finish(7).to_vec();
        assert_eq!(u32::from_ne_bytes(bytes[0..4].try_into().unwrap()) as usize, bytes.len());
        let attrs: Vec<Attr> = Attrs(&bytes[20..]).collect();
        assert_eq!(attrs.len(), 2);
        assert_eq!(attrs[0].nested().get(6).unwrap().string(), "rr");
        assert_eq!(attrs[0].nested().get(1).unwrap().u16(), Some(2));
        assert_eq!(attrs[1].u32(), Some(900));
        // Lengths that lie end the iteration instead of reading out of bounds.
        assert_eq!(Attrs(&[200, 0, 1, 0, 1, 2]).count(), 0);
        assert_eq!(Attrs(&[2, 0, 1, 0]).count(), 0);
        assert!(Attrs(&[8, 0, 1, 0, 1]).next().is_none());
    }
}
