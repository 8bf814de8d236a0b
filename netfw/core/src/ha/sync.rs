//! Flow sync between the two boxes of a pair: UDP datagrams from DIP to peer DIP, each a batch
//! of flow changes (or a request for the whole table, or the end of one), signed with the
//! pair's key.
//!
//! ```text
//! magic "NFSY" | kind u8 | count u8 | 0 0 | sequence u64 | count × entry (20 bytes) | HMAC-SHA256/16
//! entry: client IPv4, VIP, client port, virtual port, protocol, state, real server IPv4, 0 0
//! ```
//!
//! The HMAC covers the source and destination addresses and every byte before it; a batch
//! whose sequence number is not above the last one taken from the peer is a replay. The real
//! server is named by its address (the backend indices of the two boxes need not agree), and
//! the receiver looks the service up by VIP, port and protocol.

use core::fmt;
use core::net::Ipv4Addr;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::flow::{FlowKey, FlowState};

/// The UDP port both boxes receive sync on (on the DIP).
pub const SYNC_PORT: u16 = 5798;
/// Bytes before the entries.
pub const HEADER: usize = 16;
/// Bytes of one entry.
pub const ENTRY: usize = 20;
/// Bytes of the authenticator.
pub const AUTH: usize = 16;
/// Most entries in one batch (the datagram stays under 1,400 bytes).
pub const MAX_ENTRIES: usize = 64;
/// The largest batch's payload.
pub const MAX_PAYLOAD: usize = HEADER + MAX_ENTRIES * ENTRY + AUTH;
const MAGIC: &[u8; 4] = b"NFSY";

/// What a batch is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Kind {
    /// Flow changes.
    Flows,
    /// "Send me your whole flow table" (a returning master before it preempts).
    TableRequest,
    /// The whole table was sent.
    TableDone,
}

impl Kind {
    fn byte(self) -> u8 {
        match self {
            Kind::Flows => 1,
            Kind::TableRequest => 2,
            Kind::TableDone => 3,
        }
    }
}

/// One flow as the master has it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyncEntry {
    /// The flow.
    pub key: FlowKey,
    /// Its real server.
    pub rip: Ipv4Addr,
    /// Its state (the receiver gives it that state's timeout).
    pub state: FlowState,
}

/// Why a received batch is not taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum SyncError {
    /// Not a batch of this format (magic, kind, length).
    Malformed,
    /// Not signed with the pair's key.
    Auth,
}

impl fmt::Display for SyncError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SyncError::Malformed => "not a flow-sync datagram of this format",
            SyncError::Auth => "not signed with the pair's key",
        })
    }
}

fn hmac(key: &[u8], src: Ipv4Addr, dst: Ipv4Addr, body: &[u8]) -> Option<Hmac<Sha256>> {
    let mut m = Hmac::<Sha256>::new_from_slice(key).ok()?;
    m.update(&src.octets());
    m.update(&dst.octets());
    m.update(body);
    Some(m)
}

/// A received batch, checked.
#[derive(Clone, Copy, Debug)]
pub struct Batch<'a> {
    kind: Kind,
    sequence: u64,
    entries: &'a [u8],
}

impl<'a> Batch<'a> {
    /// Check `payload` (a UDP payload from `src` to `dst`) with `key`.
    pub fn parse(src: Ipv4Addr, dst: Ipv4Addr, payload: &'a [u8], key: &[u8]) -> Result<Batch<'a>, SyncError> {
        let head = payload.get(..HEADER).ok_or(SyncError::Malformed)?;
        if &head[..4] != MAGIC {
            return Err(SyncError::Malformed);
        }
        let kind = match head[4] {
            1 => Kind::Flows,
            2 => Kind::TableRequest,
            3 => Kind::TableDone,
            _ => return Err(SyncError::Malformed),
        };
        let count = usize::from(head[5]);
        let body_len = HEADER + count * ENTRY;
        if count > MAX_ENTRIES || payload.len() != body_len + AUTH {
            return Err(SyncError::Malformed);
        }
        let body = payload.get(..body_len).ok_or(SyncError::Malformed)?;
        hmac(key, src, dst, body)
            .ok_or(SyncError::Auth)?
            .verify_truncated_left(payload.get(body_len..).ok_or(SyncError::Malformed)?)
            .map_err(|_| SyncError::Auth)?;
        let mut seq = [0u8; 8];
        seq.copy_from_slice(&head[8..16]);
        Ok(Batch { kind, sequence: u64::from_be_bytes(seq), entries: body.get(HEADER..).unwrap_or_default() })
    }

    /// What it is.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// Its sequence number.
    pub fn sequence(&self) -> u64 {
        self.sequence
    }

    /// Its flows (an entry with an unknown state is skipped).
    pub fn entries(&self) -> impl Iterator<Item = SyncEntry> + 'a {
        self.entries.chunks_exact(ENTRY).filter_map(|e| {
            let ip = |o: usize| Ipv4Addr::new(e[o], e[o + 1], e[o + 2], e[o + 3]);
            let state = *FlowState::ALL.get(usize::from(e[13]))?;
            let key = FlowKey::new(ip(0), ip(4), u16::from_be_bytes([e[8], e[9]]), u16::from_be_bytes([e[10], e[11]]), e[12]);
            Some(SyncEntry { key, rip: ip(14), state })
        })
    }
}

/// Write a batch of `kind` with `entries` (at most `MAX_ENTRIES`) from `src` to `dst` into
/// `buf`; its length, or `None` if it does not fit.
pub fn emit(buf: &mut [u8], src: Ipv4Addr, dst: Ipv4Addr, kind: Kind, sequence: u64, entries: &[SyncEntry], key: &[u8]) -> Option<usize> {
    if entries.len() > MAX_ENTRIES {
        return None;
    }
    let body_len = HEADER + entries.len() * ENTRY;
    let out = buf.get_mut(..body_len + AUTH)?;
    out.fill(0);
    out[..4].copy_from_slice(MAGIC);
    out[4] = kind.byte();
    out[5] = u8::try_from(entries.len()).ok()?;
    out[8..16].copy_from_slice(&sequence.to_be_bytes());
    for (slot, e) in out[HEADER..body_len].chunks_exact_mut(ENTRY).zip(entries) {
        slot[..4].copy_from_slice(&e.key.client().octets());
        slot[4..8].copy_from_slice(&e.key.vip().octets());
        slot[8..10].copy_from_slice(&e.key.cport().to_be_bytes());
        slot[10..12].copy_from_slice(&e.key.vport().to_be_bytes());
        slot[12] = e.key.proto();
        slot[13] = e.state as u8;
        slot[14..18].copy_from_slice(&e.rip.octets());
    }
    let tag = hmac(key, src, dst, &out[..body_len])?.finalize().into_bytes();
    out[body_len..].copy_from_slice(tag.get(..AUTH)?);
    Some(body_len + AUTH)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const A: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
    const B: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 3);
    const KEY: &[u8] = b"a shared secret";

    fn entry(i: u16) -> SyncEntry {
        SyncEntry {
            key: FlowKey::new(Ipv4Addr::new(198, 51, 100, 2), Ipv4Addr::new(203, 0, 113, 10), 40_000 + i, 80, 6),
            rip: Ipv4Addr::new(198, 18, 0, 11),
            state: FlowState::Established,
        }
    }

    #[test]
    fn a_batch_round_trips_and_a_wrong_key_or_sender_is_refused() {
        let entries: [SyncEntry; 3] = [entry(0), entry(1), SyncEntry { state: FlowState::FinWait, ..entry(2) }];
        let mut buf = [0u8; MAX_PAYLOAD];
        let n = emit(&mut buf, A, B, Kind::Flows, 9, &entries, KEY).unwrap();
        assert_eq!(n, HEADER + 3 * ENTRY + AUTH);
        let b = Batch::parse(A, B, &buf[..n], KEY).unwrap();
        assert_eq!((b.kind(), b.sequence()), (Kind::Flows, 9));
        assert_eq!(b.entries().collect::<Vec<_>>(), entries.to_vec());
        assert_eq!(Batch::parse(A, B, &buf[..n], b"another key").unwrap_err(), SyncError::Auth);
        assert_eq!(Batch::parse(B, A, &buf[..n], KEY).unwrap_err(), SyncError::Auth, "the addresses are signed");
        let mut changed = buf;
        changed[HEADER + 14 + 3] ^= 1; // another real server
        assert_eq!(Batch::parse(A, B, &changed[..n], KEY).unwrap_err(), SyncError::Auth);
        assert_eq!(Batch::parse(A, B, &buf[..n - 1], KEY).unwrap_err(), SyncError::Malformed);
        let n = emit(&mut buf, A, B, Kind::TableRequest, 10, &[], KEY).unwrap();
        assert_eq!(Batch::parse(A, B, &buf[..n], KEY).unwrap().kind(), Kind::TableRequest);
        assert!(emit(&mut buf, A, B, Kind::Flows, 1, &[entry(0); MAX_ENTRIES + 1], KEY).is_none());
    }

    proptest! {
        #[test]
        fn no_payload_panics_the_parser(bytes in proptest::collection::vec(any::<u8>(), 0..1500)) {
            let _ = Batch::parse(A, B, &bytes, KEY);
        }
    }
}
