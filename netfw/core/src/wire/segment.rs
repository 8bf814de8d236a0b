//! Splitting a merged TCP/IPv4 frame back into segments that fit the MTU.
//!
//! Receive merging (GRO, LRO) on a NIC, or TSO on the other end of a veth, hands the forwarder
//! one frame holding many TCP segments of a connection: an IP packet of up to 64 KiB. A real
//! server on a standard Ethernet MTU cannot take it, so the forwarder sends what the sender's
//! own segmentation would have sent: each segment carries the same headers with the IP ID
//! advanced, the total length and header checksum fixed, the sequence number advanced by the
//! payload before it, FIN and PSH only on the last segment, CWR only on the first, and its TCP
//! checksum computed anew. No allocation: each segment is built in a buffer on the stack and
//! handed to the caller.

use super::csum::{fold, sum};
use super::frame::PROTO_TCP;
use super::ETH_HDR_LEN;

/// The largest frame a segment becomes (MTU 1500 plus the Ethernet header).
pub const MAX_SEGMENT_FRAME: usize = 1500 + ETH_HDR_LEN;

const FIN: u8 = 0x01;
const PSH: u8 = 0x08;
const CWR: u8 = 0x80;

/// Why a frame cannot be split.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SplitError {
    /// Not an unfragmented TCP/IPv4 packet (a merged UDP frame carries no segment size).
    NotTcp,
    /// Lengths that do not add up.
    BadHeaders,
    /// The MTU leaves no room for payload after the headers, or exceeds `MAX_SEGMENT_FRAME`.
    BadMtu,
}

/// What a split did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Split {
    /// Segments built.
    pub segments: usize,
    /// Segments `emit` could not send.
    pub unsent: usize,
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// Split `frame` (Ethernet, IPv4, TCP; MACs already rewritten) into frames whose IP packets
/// are at most `mtu` bytes, handing each to `emit` (which says whether it went out). A frame
/// that already fits is handed over whole.
pub fn split_tcp(frame: &[u8], mtu: usize, mut emit: impl FnMut(&[u8]) -> bool) -> Result<Split, SplitError> {
    if mtu + ETH_HDR_LEN > MAX_SEGMENT_FRAME {
        return Err(SplitError::BadMtu);
    }
    let ip = frame.get(ETH_HDR_LEN..).ok_or(SplitError::BadHeaders)?;
    if frame.get(12..14) != Some(&[0x08, 0x00]) || ip.len() < 20 || ip[0] >> 4 != 4 {
        return Err(SplitError::NotTcp);
    }
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    if ip[9] != PROTO_TCP || be16(ip, 6) & 0x3fff != 0 {
        return Err(SplitError::NotTcp);
    }
    let total = usize::from(be16(ip, 2));
    let thl = usize::from(*ip.get(ihl + 12).ok_or(SplitError::BadHeaders)? >> 4) * 4;
    if ihl < 20 || thl < 20 || total < ihl + thl || total > ip.len() {
        return Err(SplitError::BadHeaders);
    }
    if total <= mtu {
        let sent = emit(&frame[..ETH_HDR_LEN + total]);
        return Ok(Split { segments: 1, unsent: usize::from(!sent) });
    }
    let mss = mtu.checked_sub(ihl + thl).filter(|m| *m > 0).ok_or(SplitError::BadMtu)?;
    let hdr = ETH_HDR_LEN + ihl + thl;
    let payload = &frame[hdr..ETH_HDR_LEN + total];
    let id = be16(ip, 4);
    let seq = u32::from_be_bytes([ip[ihl + 4], ip[ihl + 5], ip[ihl + 6], ip[ihl + 7]]);
    let flags = ip[ihl + 13];
    let count = payload.len().div_ceil(mss);
    let mut out = [0u8; MAX_SEGMENT_FRAME];
    let mut unsent = 0;
    for (k, chunk) in payload.chunks(mss).enumerate() {
        let len = hdr + chunk.len();
        out[..hdr].copy_from_slice(&frame[..hdr]);
        out[hdr..len].copy_from_slice(chunk);
        let seg = &mut out[ETH_HDR_LEN..];
        let ip_len = ihl + thl + chunk.len();
        seg[2..4].copy_from_slice(&u16::try_from(ip_len).unwrap_or(u16::MAX).to_be_bytes());
        // k < 64 Ki / 1 byte: the IDs of one merged packet never wrap more than once.
        let k16 = u16::try_from(k).unwrap_or(u16::MAX);
        seg[4..6].copy_from_slice(&id.wrapping_add(k16).to_be_bytes());
        seg[10..12].copy_from_slice(&[0, 0]);
        let hc = fold(sum(&seg[..ihl], 0));
        seg[10..12].copy_from_slice(&hc.to_be_bytes());
        let tcp = &mut seg[ihl..ip_len];
        let offset = u32::try_from(k * mss).unwrap_or(u32::MAX);
        tcp[4..8].copy_from_slice(&seq.wrapping_add(offset).to_be_bytes());
        let mut f = flags;
        if k + 1 < count {
            f &= !(FIN | PSH);
        }
        if k > 0 {
            f &= !CWR;
        }
        tcp[13] = f;
        tcp[16..18].copy_from_slice(&[0, 0]);
        let mut pseudo = [0u8; 12];
        pseudo[..8].copy_from_slice(&ip[12..20]);
        pseudo[9] = PROTO_TCP;
        pseudo[10..12].copy_from_slice(&u16::try_from(ip_len - ihl).unwrap_or(0).to_be_bytes());
        let c = fold(sum(tcp, sum(&pseudo, 0)));
        tcp[16..18].copy_from_slice(&c.to_be_bytes());
        if !emit(&out[..len]) {
            unsent += 1;
        }
    }
    Ok(Split { segments: count, unsent })
}

#[cfg(test)]
mod tests {
    use alloc::vec;
    use alloc::vec::Vec;

    use super::*;

    /// A merged frame: 3000 bytes of payload with a PSH|ACK|FIN|CWR flag set.
    fn merged(payload: usize) -> Vec<u8> {
        let mut f = vec![0u8; ETH_HDR_LEN + 20 + 20 + payload];
        f[12] = 0x08;
        let total = u16::try_from(40 + payload).unwrap();
        let ip = &mut f[ETH_HDR_LEN..];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&total.to_be_bytes());
        ip[4..6].copy_from_slice(&0xfffeu16.to_be_bytes());
        ip[6] = 0x40; // DF
        ip[8] = 64;
        ip[9] = PROTO_TCP;
        ip[12..16].copy_from_slice(&[198, 51, 100, 2]);
        ip[16..20].copy_from_slice(&[203, 0, 113, 10]);
        let tcp = &mut ip[20..];
        tcp[0..2].copy_from_slice(&40000u16.to_be_bytes());
        tcp[2..4].copy_from_slice(&80u16.to_be_bytes());
        tcp[4..8].copy_from_slice(&0xffff_ff00u32.to_be_bytes());
        tcp[12] = 0x50;
        tcp[13] = 0x10 | PSH | FIN | CWR;
        for (i, b) in tcp[20..].iter_mut().enumerate() {
            *b = u8::try_from(i % 251).unwrap();
        }
        f
    }

    fn valid_checksums(seg: &[u8]) -> bool {
        let ip = &seg[ETH_HDR_LEN..];
        let len = usize::from(be16(ip, 2));
        let mut pseudo = [0u8; 12];
        pseudo[..8].copy_from_slice(&ip[12..20]);
        pseudo[9] = PROTO_TCP;
        pseudo[10..12].copy_from_slice(&u16::try_from(len - 20).unwrap().to_be_bytes());
        fold(sum(&ip[..20], 0)) == 0 && fold(sum(&ip[20..len], sum(&pseudo, 0))) == 0
    }

    #[test]
    #[allow(clippy::cast_possible_truncation, reason = "test pattern bytes")]
    fn a_merged_frame_becomes_the_segments_its_sender_would_have_sent() {
        let f = merged(3000);
        let mut segs: Vec<Vec<u8>> = Vec::new();
        let s = split_tcp(&f, 1500, |seg| {
            segs.push(seg.to_vec());
            true
        })
        .unwrap();
        assert_eq!(s, Split { segments: 3, unsent: 0 });
        assert_eq!(segs.iter().map(Vec::len).collect::<Vec<_>>(), vec![1514, 1514, 14 + 40 + 80]);
        let mut payload = Vec::new();
        for (k, seg) in segs.iter().enumerate() {
            assert!(valid_checksums(seg), "segment {k}");
            let ip = &seg[ETH_HDR_LEN..];
            assert_eq!(be16(ip, 4), 0xfffeu16.wrapping_add(k as u16), "IP IDs advance (and wrap)");
            let seq = u32::from_be_bytes([ip[24], ip[25], ip[26], ip[27]]);
            assert_eq!(seq, 0xffff_ff00u32.wrapping_add(1460 * k as u32), "sequence numbers advance (and wrap)");
            let flags = ip[33];
            assert_eq!(flags & (FIN | PSH) != 0, k == 2, "FIN and PSH on the last segment only");
            assert_eq!(flags & CWR != 0, k == 0, "CWR on the first segment only");
            payload.extend_from_slice(&ip[40..]);
        }
        assert_eq!(payload, f[54..].to_vec(), "the payload, in order, whole");
    }

    #[test]
    fn what_fits_goes_whole_and_what_cannot_be_split_says_why() {
        let f = merged(100);
        let mut n = 0;
        assert_eq!(
            split_tcp(&f, 1500, |s| {
                n += s.len();
                false
            }),
            Ok(Split { segments: 1, unsent: 1 })
        );
        assert_eq!(n, f.len());
        let mut udp = merged(3000);
        udp[ETH_HDR_LEN + 9] = 17;
        assert_eq!(split_tcp(&udp, 1500, |_| true), Err(SplitError::NotTcp));
        assert_eq!(split_tcp(&merged(3000), 9000, |_| true), Err(SplitError::BadMtu));
        assert_eq!(split_tcp(&merged(3000), 40, |_| true), Err(SplitError::BadMtu));
        let mut short = merged(3000);
        short.truncate(2000);
        assert_eq!(split_tcp(&short, 1500, |_| true), Err(SplitError::BadHeaders));
        assert_eq!(split_tcp(&[0u8; 10], 1500, |_| true), Err(SplitError::BadHeaders));
    }
}
