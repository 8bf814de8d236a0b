//! The fast path's view of a frame: the fields the forwarder needs of the common case (an
//! untagged Ethernet frame carrying an unfragmented IPv4 TCP or UDP packet with a plain
//! 20-byte header), read after one bounds check. Anything else (ARP, IP options, fragments,
//! ICMP, short frames, inconsistent lengths) is `None` and goes through `frame::classify`,
//! which says exactly what it is. The header checksum is a separate check
//! (`header_checksum_ok`), in a few word additions: the forwarder makes it before a packet
//! may create a flow.

use core::net::Ipv4Addr;

use super::frame::{PROTO_TCP, PROTO_UDP};
use super::ETH_HDR_LEN;
use crate::flow::FlowKey;

/// Bytes the fast path reads: Ethernet, a 20-byte IPv4 header and the first 14 bytes of TCP
/// (the flags); a UDP frame this short goes the long way.
const VIEW: usize = ETH_HDR_LEN + 20 + 14;

/// A typed view of the first `VIEW` bytes of a frame.
#[derive(Clone, Copy, Debug)]
pub struct Packet<'a>(&'a [u8; VIEW]);

impl<'a> Packet<'a> {
    /// The view of `frame` if it is the common case (see the module), else `None`.
    #[inline]
    pub fn parse(frame: &'a [u8]) -> Option<Packet<'a>> {
        let h: &[u8; VIEW] = frame.get(..VIEW)?.try_into().ok()?;
        let proto = h[23];
        // EtherType IPv4 and version 4 with IHL 5 (one word), not a fragment (flags MF and
        // offset zero), TCP or UDP. Words are read little-endian (one load on most machines)
        // and compared with constants made the same way; a shift drops the byte after.
        let ether_ver = u32::from_le_bytes([h[12], h[13], h[14], h[15]]) << 8;
        let frag = u16::from_le_bytes([h[20], h[21]]) & u16::from_le_bytes([0x3f, 0xff]);
        if ether_ver != u32::from_le_bytes([0, 0x08, 0x00, 0x45]) || frag != 0 || (proto != PROTO_TCP && proto != PROTO_UDP) {
            return None;
        }
        // 28 <= total length <= the frame's IP bytes, in one comparison (the frame holds at
        // least `VIEW` bytes, so nothing underflows).
        let total = usize::from(u16::from_be_bytes([h[16], h[17]]));
        if total.wrapping_sub(20 + 8) > frame.len() - ETH_HDR_LEN - (20 + 8) {
            return None;
        }
        Some(Packet(h))
    }

    /// Whether the IPv4 header's checksum is right.
    #[inline]
    pub fn header_checksum_ok(&self) -> bool {
        // Right when the one's complement sum of the header's 16-bit words is 0xffff
        // (negative zero), that is when their plain sum is a non-zero multiple of 0xffff:
        // 2^16 is 1 modulo 0xffff, so 32-bit words may be summed as they are, and in either
        // byte order. (Not zero: the version byte is not.)
        let h = self.0;
        let w = |i: usize| u64::from(u32::from_ne_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]));
        let s = w(14) + w(18) + w(22) + w(26) + w(30);
        s % 0xffff == 0
    }

    /// Destination MAC as a word (its six bytes read little-endian, shifted up over the two
    /// that follow): compare it with a MAC read the same way, never print it.
    #[inline]
    pub fn dst_mac_word(&self) -> u64 {
        let h = self.0;
        u64::from_le_bytes([h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7]]) << 16
    }
    /// Source address.
    #[inline]
    pub fn src(&self) -> Ipv4Addr {
        Ipv4Addr::new(self.0[26], self.0[27], self.0[28], self.0[29])
    }
    /// Destination address.
    #[inline]
    pub fn dst(&self) -> Ipv4Addr {
        Ipv4Addr::new(self.0[30], self.0[31], self.0[32], self.0[33])
    }
    /// IP protocol (TCP or UDP).
    #[inline]
    pub fn proto(&self) -> u8 {
        self.0[23]
    }
    /// Source port.
    #[inline]
    pub fn sport(&self) -> u16 {
        u16::from_be_bytes([self.0[34], self.0[35]])
    }
    /// Destination port.
    #[inline]
    pub fn dport(&self) -> u16 {
        u16::from_be_bytes([self.0[36], self.0[37]])
    }
    /// TCP flags (0 for UDP).
    #[inline]
    pub fn tcp_flags(&self) -> u8 {
        if self.proto() == PROTO_TCP {
            self.0[47]
        } else {
            0
        }
    }
    /// The flow key (source and destination address and port, protocol), read as the bytes
    /// lie: two loads, no byte swaps.
    #[inline]
    pub fn flow_key(&self) -> FlowKey {
        let h = self.0;
        FlowKey::from_wire([h[26], h[27], h[28], h[29], h[30], h[31], h[32], h[33]], [h[34], h[35], h[36], h[37]], h[23])
    }
    /// The IP packet's length.
    #[inline]
    pub fn ip_len(&self) -> usize {
        usize::from(u16::from_be_bytes([self.0[16], self.0[17]]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::frame::{classify, Frame, L4Info};

    fn tcp_frame() -> [u8; 60] {
        let mut f = [0u8; 60];
        f[12] = 0x08;
        f[14] = 0x45;
        f[16..18].copy_from_slice(&44u16.to_be_bytes());
        f[22] = 64;
        f[23] = PROTO_TCP;
        f[26..30].copy_from_slice(&[198, 51, 100, 2]);
        f[30..34].copy_from_slice(&[203, 0, 113, 10]);
        let mut s: u32 = f[14..34].chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], c[1]]))).sum();
        while s > 0xffff {
            s = (s & 0xffff) + (s >> 16);
        }
        f[24..26].copy_from_slice(&(!u16::try_from(s).unwrap()).to_be_bytes());
        f[34..36].copy_from_slice(&40000u16.to_be_bytes());
        f[36..38].copy_from_slice(&80u16.to_be_bytes());
        f[46] = 0x50;
        f[47] = 0x12;
        f
    }

    #[test]
    fn the_common_case_reads_as_the_full_classifier_does() {
        let f = tcp_frame();
        let p = Packet::parse(&f).unwrap();
        let Ok(Frame::Ipv4(ip)) = classify(&f) else { panic!() };
        assert_eq!((p.src(), p.dst(), p.proto(), p.ip_len()), (ip.src, ip.dst, ip.proto, ip.total_len));
        assert_eq!(L4Info::Ports { src: p.sport(), dst: p.dport(), tcp_flags: p.tcp_flags() }, ip.l4);
        assert_eq!(p.flow_key(), FlowKey::new(ip.src, ip.dst, p.sport(), p.dport(), ip.proto));
        assert_eq!((p.flow_key().client(), p.flow_key().vport()), (ip.src, 80));
    }

    #[test]
    fn anything_unusual_goes_the_long_way() {
        let good = tcp_frame();
        for (at, v) in [(12, 0x86), (14, 0x46), (20, 0x20), (21, 1), (23, 1), (16, 0xff)] {
            let mut f = good;
            f[at] ^= v;
            assert!(Packet::parse(&f).is_none(), "byte {at}");
        }
        assert!(Packet::parse(&good[..47]).is_none());
        let mut f = good;
        f[25] ^= 1;
        assert!(!Packet::parse(&f).unwrap().header_checksum_ok());
        assert!(Packet::parse(&good).unwrap().header_checksum_ok());
    }
}
