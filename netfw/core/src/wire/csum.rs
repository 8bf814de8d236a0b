//! Completing TCP/UDP checksums the sender left to "hardware".
//!
//! A frame that comes from a local stack over a virtual NIC (veth, tap, virtio-net with
//! checksum offload) can arrive with its L4 checksum not yet computed (the kernel's
//! CHECKSUM_PARTIAL, TP_STATUS_CSUMNOTREADY on the ring). Forwarded as is, the real server
//! would drop it, so the forwarder computes the checksum first.

use super::frame::{PROTO_TCP, PROTO_UDP};
use super::ETH_HDR_LEN;

/// The 16-bit one's complement sum of `data` added to `acc` (unfolded).
pub(crate) fn sum(data: &[u8], mut acc: u32) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        acc += u32::from(u16::from_be_bytes([*last, 0]));
    }
    acc
}

/// The checksum of a sum: folded to 16 bits and complemented.
pub(crate) fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    #[allow(clippy::cast_possible_truncation, reason = "the folded sum fits 16 bits")]
    let folded = acc as u16;
    !folded
}

/// The checksum of an IPv4 header whose checksum field is zero (what goes into that field).
pub fn ipv4_header_checksum(header: &[u8]) -> u16 {
    fold(sum(header, 0))
}

/// Compute and store the TCP or UDP checksum of an untagged IPv4 frame in place. Returns
/// false (and changes nothing) if the frame is not an unfragmented IPv4 TCP/UDP packet whose
/// lengths are consistent.
pub fn complete_l4_checksum(frame: &mut [u8]) -> bool {
    let Some(ip) = frame.get(ETH_HDR_LEN..) else { return false };
    if frame.get(12..14) != Some(&[0x08, 0x00]) || ip.len() < 20 || ip[0] >> 4 != 4 {
        return false;
    }
    let hl = usize::from(ip[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    let frag = u16::from_be_bytes([ip[6], ip[7]]);
    if hl < 20 || total < hl || total > ip.len() || frag & 0x3fff != 0 {
        return false;
    }
    let proto = ip[9];
    let field = match proto {
        PROTO_TCP => 16,
        PROTO_UDP => 6,
        _ => return false,
    };
    let l4_len = total - hl;
    if l4_len < field + 2 {
        return false;
    }
    let mut pseudo = [0u8; 12];
    pseudo[..8].copy_from_slice(&ip[12..20]);
    pseudo[9] = proto;
    pseudo[10..12].copy_from_slice(&u16::try_from(l4_len).unwrap_or(0).to_be_bytes());
    let start = ETH_HDR_LEN + hl;
    let l4 = &mut frame[start..start + l4_len];
    l4[field] = 0;
    l4[field + 1] = 0;
    let mut c = fold(sum(l4, sum(&pseudo, 0)));
    if proto == PROTO_UDP && c == 0 {
        c = 0xffff;
    }
    l4[field..field + 2].copy_from_slice(&c.to_be_bytes());
    true
}
