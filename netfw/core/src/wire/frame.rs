//! One-pass classification of a received Ethernet frame.
//!
//! `classify` reads the Ethernet, ARP, IPv4 and TCP/UDP/ICMP headers it needs and returns a
//! `Frame` describing them. It never panics: every malformed input maps to a `WireError`, which
//! the forwarder counts as a drop reason.

use core::net::Ipv4Addr;
use smoltcp::wire::{ArpOperation, ArpPacket, ArpRepr, EthernetFrame, EthernetProtocol, IpProtocol, Ipv4Packet};

use super::Mac;

/// IP protocol numbers the fast path understands.
pub const PROTO_ICMP: u8 = 1;
/// TCP.
pub const PROTO_TCP: u8 = 6;
/// UDP.
pub const PROTO_UDP: u8 = 17;

/// TCP flag bits (byte 13 of the TCP header).
pub mod tcp_flags {
    /// FIN
    pub const FIN: u8 = 0x01;
    /// SYN
    pub const SYN: u8 = 0x02;
    /// RST
    pub const RST: u8 = 0x04;
    /// ACK
    pub const ACK: u8 = 0x10;
}

/// Why a frame could not be parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum WireError {
    /// Shorter than an Ethernet header.
    TruncatedEthernet,
    /// 802.1Q/802.1ad tagged: dedicated NICs carry untagged frames (use a VLAN subinterface).
    VlanTagged,
    /// IPv6: the DR forwarder serves IPv4 VIPs only.
    Ipv6,
    /// An EtherType the director does not handle.
    UnknownEthertype,
    /// ARP that is not Ethernet/IPv4 or is cut short.
    BadArp,
    /// IPv4 header cut short, wrong version, header length below 20 or beyond the packet.
    BadIpv4Header,
    /// IPv4 header checksum does not match.
    BadIpv4Checksum,
    /// A TCP/UDP/ICMP header cut short in a first (or unfragmented) packet.
    TruncatedL4,
}

/// Layer-4 facts of an IPv4 packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L4Info {
    /// TCP or UDP with ports (and TCP flags; 0 for UDP).
    Ports { src: u16, dst: u16, tcp_flags: u8 },
    /// ICMP with type and code; `inner` is the offset (from the IP payload start) of an
    /// embedded IPv4 header for error messages.
    Icmp { icmp_type: u8, code: u8 },
    /// A non-first fragment: no L4 header in this packet.
    Fragment,
    /// Another protocol.
    Other,
}

/// The IPv4 facts of a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4Info {
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// IP protocol number.
    pub proto: u8,
    /// Identification field (for fragments).
    pub ident: u16,
    /// More-fragments flag.
    pub more_frags: bool,
    /// Fragment offset in bytes.
    pub frag_offset: u16,
    /// Offset of the IP header in the frame.
    pub ip_offset: usize,
    /// Offset of the IP payload (after options) in the frame.
    pub payload_offset: usize,
    /// Length of the IP packet (total length field).
    pub total_len: usize,
    /// What is above IP.
    pub l4: L4Info,
}

impl Ipv4Info {
    /// True for any fragment (first or later).
    pub fn is_fragment(&self) -> bool {
        self.more_frags || self.frag_offset != 0
    }
}

/// A classified frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frame {
    /// ARP (Ethernet/IPv4).
    Arp {
        /// Request or reply.
        op: ArpOp,
        /// Sender hardware address.
        sender_mac: Mac,
        /// Sender protocol address.
        sender_ip: Ipv4Addr,
        /// Target protocol address.
        target_ip: Ipv4Addr,
    },
    /// IPv4.
    Ipv4(Ipv4Info),
}

/// ARP operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArpOp {
    /// who-has
    Request,
    /// is-at
    Reply,
    /// anything else
    Other,
}

/// Destination MAC of a frame (caller guarantees at least 14 bytes).
pub fn dst_mac(frame: &[u8]) -> Mac {
    let mut m = [0u8; 6];
    if let Some(b) = frame.get(0..6) {
        m.copy_from_slice(b);
    }
    m
}

/// Classify a frame. Never panics.
pub fn classify(bytes: &[u8]) -> Result<Frame, WireError> {
    let eth = EthernetFrame::new_checked(bytes).map_err(|_| WireError::TruncatedEthernet)?;
    match eth.ethertype() {
        EthernetProtocol::Arp => classify_arp(eth.payload()),
        EthernetProtocol::Ipv4 => classify_ipv4(bytes, super::ETH_HDR_LEN).map(Frame::Ipv4),
        EthernetProtocol::Ipv6 => Err(WireError::Ipv6),
        EthernetProtocol::Unknown(0x8100 | 0x88a8 | 0x9100) => Err(WireError::VlanTagged),
        EthernetProtocol::Unknown(_) => Err(WireError::UnknownEthertype),
    }
}

fn classify_arp(payload: &[u8]) -> Result<Frame, WireError> {
    let pkt = ArpPacket::new_checked(payload).map_err(|_| WireError::BadArp)?;
    match ArpRepr::parse(&pkt).map_err(|_| WireError::BadArp)? {
        ArpRepr::EthernetIpv4 { operation, source_hardware_addr, source_protocol_addr, target_protocol_addr, .. } => {
            let op = match operation {
                ArpOperation::Request => ArpOp::Request,
                ArpOperation::Reply => ArpOp::Reply,
                _ => ArpOp::Other,
            };
            Ok(Frame::Arp { op, sender_mac: source_hardware_addr.0, sender_ip: source_protocol_addr, target_ip: target_protocol_addr })
        }
        _ => Err(WireError::BadArp),
    }
}

/// Parse an IPv4 packet starting at `off` in `bytes` (also used for the packet embedded in
/// ICMP errors, where `lenient` trailing truncation is allowed).
pub fn classify_ipv4(bytes: &[u8], off: usize) -> Result<Ipv4Info, WireError> {
    let ip_bytes = bytes.get(off..).ok_or(WireError::BadIpv4Header)?;
    let ip = Ipv4Packet::new_checked(ip_bytes).map_err(|_| WireError::BadIpv4Header)?;
    if ip.version() != 4 || ip.header_len() < 20 {
        return Err(WireError::BadIpv4Header);
    }
    if !ip.verify_checksum() {
        return Err(WireError::BadIpv4Checksum);
    }
    let hl = usize::from(ip.header_len());
    let total_len = usize::from(ip.total_len());
    let payload = ip.payload();
    let proto = u8::from(ip.next_header());
    let frag_offset = ip.frag_offset();
    let l4 = if frag_offset != 0 { L4Info::Fragment } else { l4_info(proto, payload)? };
    Ok(Ipv4Info {
        src: ip.src_addr(),
        dst: ip.dst_addr(),
        proto,
        ident: ip.ident(),
        more_frags: ip.more_frags(),
        frag_offset,
        ip_offset: off,
        payload_offset: off + hl,
        total_len,
        l4,
    })
}

fn l4_info(proto: u8, payload: &[u8]) -> Result<L4Info, WireError> {
    match IpProtocol::from(proto) {
        IpProtocol::Tcp => {
            let h = payload.get(0..14).ok_or(WireError::TruncatedL4)?;
            Ok(L4Info::Ports { src: be16(h, 0), dst: be16(h, 2), tcp_flags: h[13] })
        }
        IpProtocol::Udp => {
            let h = payload.get(0..8).ok_or(WireError::TruncatedL4)?;
            Ok(L4Info::Ports { src: be16(h, 0), dst: be16(h, 2), tcp_flags: 0 })
        }
        IpProtocol::Icmp => {
            let h = payload.get(0..8).ok_or(WireError::TruncatedL4)?;
            Ok(L4Info::Icmp { icmp_type: h[0], code: h[1] })
        }
        _ => Ok(L4Info::Other),
    }
}

/// The ports of the packet embedded in an ICMP error (RFC 792: IP header + first 8 bytes).
///
/// Returns (inner src, inner dst, proto, inner src port, inner dst port). The embedded header's
/// checksum is not verified (routers may have rewritten nothing, but it is not ours to check),
/// only its bounds.
pub fn icmp_embedded(bytes: &[u8], info: &Ipv4Info) -> Option<(Ipv4Addr, Ipv4Addr, u8, u16, u16)> {
    let inner = bytes.get(info.payload_offset + 8..)?;
    let vhl = *inner.first()?;
    if vhl >> 4 != 4 {
        return None;
    }
    let hl = usize::from(vhl & 0x0f) * 4;
    if hl < 20 {
        return None;
    }
    let h = inner.get(0..hl + 4)?;
    let proto = h[9];
    let src = Ipv4Addr::new(h[12], h[13], h[14], h[15]);
    let dst = Ipv4Addr::new(h[16], h[17], h[18], h[19]);
    Some((src, dst, proto, be16(h, hl), be16(h, hl + 2)))
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}
