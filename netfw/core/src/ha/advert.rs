//! VRRPv3 advertisements (RFC 5798, IPv4) as the HA pair sends them: a checked view over a
//! received advert, and the builder of ours.
//!
//! The IP payload is the VRRP message (version 3, type 1, VRID, priority, count of addresses,
//! the maximum advertisement interval in centiseconds, the checksum with the IPv4
//! pseudo-header and protocol 112, then the VIPs), followed by a trailer the RFC does not
//! have: a 64-bit sequence number, a 64-bit digest of the sender's services (the page warns
//! when the two boxes' differ), and the first 16 bytes of an HMAC-SHA256, keyed with the
//! pair's shared secret, over the source and destination addresses, the VRRP message, the
//! sequence and the digest. The checksum covers the trailer too, so to a standard VRRP router the advert is a
//! valid one with bytes after its addresses; to this box, an advert without a valid
//! authenticator is not an advert (a stray box cannot take the VIP), and a sequence number
//! not above the last one accepted from that sender is a replay.

use core::fmt;
use core::net::Ipv4Addr;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::wire::csum::{fold, sum};

/// IP protocol number of VRRP.
pub const PROTO_VRRP: u8 = 112;
/// Where adverts are sent (the TTL must be 255).
pub const VRRP_GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);
/// The VRRP header before the addresses.
pub const HEADER: usize = 8;
/// The sequence number, the services' digest and the authenticator after them.
pub const TRAILER: usize = 8 + 8 + AUTH;
/// Bytes of the authenticator.
pub const AUTH: usize = 16;
/// Most VIPs one advert carries.
pub const MAX_VIPS: usize = 32;

/// Why a received advert is not taken (each is counted by the caller).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum AdvertError {
    /// Shorter than its header, addresses and trailer.
    Short,
    /// Not VRRP version 3.
    Version,
    /// Not an advertisement (type 1).
    Type,
    /// More addresses than an advert of ours carries, or a zero interval.
    Malformed,
    /// The checksum does not match.
    Checksum,
    /// The authenticator does not match: another key, or none (a stray or hostile box).
    Auth,
}

impl fmt::Display for AdvertError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AdvertError::Short => "shorter than a VRRP advert with its authenticator",
            AdvertError::Version => "not VRRP version 3",
            AdvertError::Type => "not a VRRP advertisement",
            AdvertError::Malformed => "a malformed VRRP advertisement",
            AdvertError::Checksum => "a bad VRRP checksum",
            AdvertError::Auth => "not signed with the pair's key",
        })
    }
}

type HmacSha256 = Hmac<Sha256>;

/// The HMAC over a VRRP message (`msg`, its checksum taken as zero: the checksum covers the
/// authenticator) with its sequence and digest (`extra`), between `src` and `dst`. `None` only
/// for a key HMAC refuses (none: it takes any length).
fn mac(key: &[u8], src: Ipv4Addr, dst: Ipv4Addr, msg: &[u8], extra: &[u8; 16]) -> Option<HmacSha256> {
    let mut m = HmacSha256::new_from_slice(key).ok()?;
    m.update(&src.octets());
    m.update(&dst.octets());
    m.update(msg.get(..6)?);
    m.update(&[0, 0]);
    m.update(msg.get(HEADER..)?);
    m.update(extra);
    Some(m)
}

/// The checksum of a VRRP payload with the IPv4 pseudo-header.
fn checksum(src: Ipv4Addr, dst: Ipv4Addr, payload: &[u8]) -> u16 {
    let mut pseudo = [0u8; 12];
    pseudo[..4].copy_from_slice(&src.octets());
    pseudo[4..8].copy_from_slice(&dst.octets());
    pseudo[9] = PROTO_VRRP;
    pseudo[10..12].copy_from_slice(&u16::try_from(payload.len()).unwrap_or(u16::MAX).to_be_bytes());
    fold(sum(payload, sum(&pseudo, 0)))
}

/// A received advert, checked (version, type, length, checksum, authenticator).
#[derive(Clone, Copy, Debug)]
pub struct Advert<'a> {
    msg: &'a [u8],
    seq: u64,
    digest: u64,
}

impl<'a> Advert<'a> {
    /// Check `payload` (the IP payload of a packet from `src` to `dst`) with `key`.
    pub fn parse(src: Ipv4Addr, dst: Ipv4Addr, payload: &'a [u8], key: &[u8]) -> Result<Advert<'a>, AdvertError> {
        let head = payload.get(..HEADER).ok_or(AdvertError::Short)?;
        if head[0] >> 4 != 3 {
            return Err(AdvertError::Version);
        }
        if head[0] & 0x0f != 1 {
            return Err(AdvertError::Type);
        }
        let count = usize::from(head[3]);
        let interval = u16::from_be_bytes([head[4], head[5]]) & 0x0fff;
        if count > MAX_VIPS || interval == 0 {
            return Err(AdvertError::Malformed);
        }
        let msg_len = HEADER + 4 * count;
        if payload.len() < msg_len + TRAILER {
            return Err(AdvertError::Short);
        }
        if checksum(src, dst, payload) != 0 {
            return Err(AdvertError::Checksum);
        }
        let msg = payload.get(..msg_len).ok_or(AdvertError::Short)?;
        let trailer = payload.get(msg_len..msg_len + TRAILER).ok_or(AdvertError::Short)?;
        let mut extra = [0u8; 16];
        extra.copy_from_slice(trailer.get(..16).ok_or(AdvertError::Short)?);
        // The comparison runs over every byte (the HMAC crate's constant-time check).
        mac(key, src, dst, msg, &extra)
            .ok_or(AdvertError::Auth)?
            .verify_truncated_left(trailer.get(16..).ok_or(AdvertError::Short)?)
            .map_err(|_| AdvertError::Auth)?;
        let (seq, digest) = extra.split_at(8);
        let word = |b: &[u8]| b.iter().fold(0u64, |w, x| w << 8 | u64::from(*x));
        Ok(Advert { msg, seq: word(seq), digest: word(digest) })
    }

    /// Virtual router ID.
    pub fn vrid(&self) -> u8 {
        self.msg.get(1).copied().unwrap_or(0)
    }

    /// The sender's priority (0: it is leaving the master role).
    pub fn priority(&self) -> u8 {
        self.msg.get(2).copied().unwrap_or(0)
    }

    /// The sender's advertisement interval, in centiseconds.
    pub fn interval_cs(&self) -> u16 {
        self.msg.get(4..6).map_or(0, |b| u16::from_be_bytes([b[0], b[1]]) & 0x0fff)
    }

    /// The sender's sequence number.
    pub fn sequence(&self) -> u64 {
        self.seq
    }

    /// The digest of the sender's services (`DataPlaneSpec::services_digest`).
    pub fn digest(&self) -> u64 {
        self.digest
    }

    /// The addresses it carries (the VIPs).
    pub fn addresses(&self) -> impl Iterator<Item = Ipv4Addr> + 'a {
        self.msg.get(HEADER..).unwrap_or_default().chunks_exact(4).map(|a| Ipv4Addr::new(a[0], a[1], a[2], a[3]))
    }
}

/// What an advert of ours says.
#[derive(Clone, Copy, Debug)]
pub struct Ours<'v> {
    /// Virtual router ID.
    pub vrid: u8,
    /// Our priority (0 when leaving the master role).
    pub priority: u8,
    /// Our advertisement interval, in centiseconds (1–4095).
    pub interval_cs: u16,
    /// The VIPs.
    pub vips: &'v [Ipv4Addr],
    /// Our sequence number (above every one sent before, also across restarts).
    pub sequence: u64,
    /// The digest of our services.
    pub digest: u64,
}

/// Write our advert from `src` (to `VRRP_GROUP`) into `buf`; its length, or `None` if it does
/// not fit or carries more than `MAX_VIPS` addresses.
pub fn emit(buf: &mut [u8], src: Ipv4Addr, a: &Ours<'_>, key: &[u8]) -> Option<usize> {
    if a.vips.len() > MAX_VIPS || a.interval_cs == 0 || a.interval_cs > 0x0fff {
        return None;
    }
    let msg_len = HEADER + 4 * a.vips.len();
    let out = buf.get_mut(..msg_len + TRAILER)?;
    out.fill(0);
    out[0] = 0x31;
    out[1] = a.vrid;
    out[2] = a.priority;
    out[3] = u8::try_from(a.vips.len()).ok()?;
    out[4..6].copy_from_slice(&a.interval_cs.to_be_bytes());
    for (slot, v) in out[HEADER..msg_len].chunks_exact_mut(4).zip(a.vips) {
        slot.copy_from_slice(&v.octets());
    }
    let mut extra = [0u8; 16];
    extra[..8].copy_from_slice(&a.sequence.to_be_bytes());
    extra[8..].copy_from_slice(&a.digest.to_be_bytes());
    let tag = mac(key, src, VRRP_GROUP, &out[..msg_len], &extra)?.finalize().into_bytes();
    out[msg_len..msg_len + 16].copy_from_slice(&extra);
    out[msg_len + 16..].copy_from_slice(tag.get(..AUTH)?);
    let c = checksum(src, VRRP_GROUP, out);
    out[6..8].copy_from_slice(&c.to_be_bytes());
    Some(msg_len + TRAILER)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SRC: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
    const KEY: &[u8] = b"a shared secret";

    fn ours(buf: &mut [u8; 256], priority: u8, sequence: u64) -> usize {
        let vips = [Ipv4Addr::new(203, 0, 113, 10), Ipv4Addr::new(203, 0, 113, 11)];
        emit(buf, SRC, &Ours { vrid: 51, priority, interval_cs: 20, vips: &vips, sequence, digest: 0xfeed }, KEY).unwrap()
    }

    #[test]
    fn an_advert_round_trips_and_carries_what_was_said() {
        let mut buf = [0u8; 256];
        let n = ours(&mut buf, 200, 7);
        assert_eq!(n, HEADER + 8 + TRAILER);
        let a = Advert::parse(SRC, VRRP_GROUP, &buf[..n], KEY).unwrap();
        assert_eq!((a.vrid(), a.priority(), a.interval_cs(), a.sequence(), a.digest()), (51, 200, 20, 7, 0xfeed));
        assert_eq!(a.addresses().collect::<Vec<_>>(), vec![Ipv4Addr::new(203, 0, 113, 10), Ipv4Addr::new(203, 0, 113, 11)]);
        assert_eq!(checksum(SRC, VRRP_GROUP, &buf[..n]), 0, "the checksum covers the pseudo-header and the trailer");
    }

    #[test]
    fn a_wrong_key_a_changed_byte_or_another_sender_is_refused() {
        let mut buf = [0u8; 256];
        let n = ours(&mut buf, 200, 7);
        assert_eq!(Advert::parse(SRC, VRRP_GROUP, &buf[..n], b"another key").unwrap_err(), AdvertError::Auth);
        let other = Ipv4Addr::new(198, 18, 0, 3);
        assert!(Advert::parse(other, VRRP_GROUP, &buf[..n], KEY).is_err(), "the sender is signed");
        // A priority raised in flight, its checksum mended: the authenticator still says no.
        let mut forged = buf;
        forged[2] = 254;
        forged[6..8].copy_from_slice(&[0, 0]);
        let c = checksum(SRC, VRRP_GROUP, &forged[..n]);
        forged[6..8].copy_from_slice(&c.to_be_bytes());
        assert_eq!(Advert::parse(SRC, VRRP_GROUP, &forged[..n], KEY).unwrap_err(), AdvertError::Auth);
        let mut bad = buf;
        bad[n - 1] ^= 1;
        assert_eq!(Advert::parse(SRC, VRRP_GROUP, &bad[..n], KEY).unwrap_err(), AdvertError::Checksum);
        assert_eq!(Advert::parse(SRC, VRRP_GROUP, &buf[..n - 1], KEY).unwrap_err(), AdvertError::Short);
        let mut v2 = buf;
        v2[0] = 0x21;
        assert_eq!(Advert::parse(SRC, VRRP_GROUP, &v2[..n], KEY).unwrap_err(), AdvertError::Version);
    }

    proptest! {
        #[test]
        fn no_payload_panics_the_parser(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Advert::parse(SRC, VRRP_GROUP, &bytes, KEY);
        }
    }
}
