//! Fragments follow their datagram's first fragment.
//!
//! The first fragment carries the ports, so it is scheduled like any packet; its real server
//! is then remembered under (source, destination, protocol, IP ID) for 30 s, and later
//! fragments with that ID follow it. A later fragment that arrives before its first one is
//! held in one of a few preallocated slots until the first arrives (or dropped after 2 s).

use alloc::vec::Vec;
use core::net::Ipv4Addr;

use super::{remap_backend, Forwarder, Verdict};
use crate::counters::{DropReason, Event};
use crate::flow::map::{FixedMap, MapKey};
use crate::time::Millis;
use crate::wire::frame::Ipv4Info;

/// How long a fragment group remembers its real server.
pub const FRAG_TIMEOUT_MS: u64 = 30_000;
/// How long an early fragment is held.
pub const FRAG_HOLD_MS: u64 = 2_000;
/// Slots for early fragments.
pub const FRAG_HOLD_SLOTS: usize = 64;
/// Largest frame a hold slot takes.
pub const FRAG_HOLD_BYTES: usize = 2048;
/// Fragment groups remembered at once.
pub const FRAG_GROUPS: usize = 8192;

#[derive(Clone, Copy, PartialEq, Eq)]
struct FragKey {
    src: Ipv4Addr,
    dst: Ipv4Addr,
    ident: u16,
    proto: u8,
}
impl MapKey for FragKey {
    fn words(&self) -> [u64; 2] {
        [(u64::from(u32::from(self.src)) << 32) | u64::from(u32::from(self.dst)), (u64::from(self.ident) << 8) | u64::from(self.proto)]
    }
}
#[derive(Clone, Copy)]
struct FragVal {
    backend: u16,
    expires: Millis,
}

#[derive(Clone, Copy)]
enum HoldState {
    Free,
    Waiting(FragKey, Millis),
    Released(u16),
}

struct HoldSlot {
    state: HoldState,
    len: usize,
    buf: [u8; FRAG_HOLD_BYTES],
}

/// Fragment groups and the frames held for them.
pub(super) struct Fragments {
    groups: FixedMap<FragKey, FragVal>,
    cursor: usize,
    hold: Vec<HoldSlot>,
    released: usize,
}

fn key_of(ip: &Ipv4Info) -> FragKey {
    FragKey { src: ip.src, dst: ip.dst, ident: ip.ident, proto: ip.proto }
}

impl Fragments {
    pub(super) fn new(seed: u64) -> Fragments {
        Fragments {
            groups: FixedMap::new(
                FRAG_GROUPS,
                seed ^ 0xaaaa,
                FragKey { src: Ipv4Addr::UNSPECIFIED, dst: Ipv4Addr::UNSPECIFIED, ident: 0, proto: 0 },
                FragVal { backend: 0, expires: Millis(0) },
            ),
            cursor: 0,
            hold: (0..FRAG_HOLD_SLOTS).map(|_| HoldSlot { state: HoldState::Free, len: 0, buf: [0; FRAG_HOLD_BYTES] }).collect(),
            released: 0,
        }
    }

    /// Forget expired groups (a slice at a time) and free slots held too long; returns how
    /// many held frames were dropped.
    pub(super) fn expire(&mut self, now: Millis) -> u64 {
        self.groups.sweep(&mut self.cursor, 256, |_, v| v.expires <= now, |_, _| {});
        let mut dropped = 0;
        for s in &mut self.hold {
            if let HoldState::Waiting(_, until) = s.state {
                if until <= now {
                    s.state = HoldState::Free;
                    dropped += 1;
                }
            }
        }
        dropped
    }

    /// Backend indices changed (a reload): follow them, forget groups whose server left.
    pub(super) fn remap(&mut self, remap: &[Option<u16>]) {
        self.groups.retain_map(|_, v| remap_backend(remap, &mut v.backend));
        for s in &mut self.hold {
            if let HoldState::Released(b) = &mut s.state {
                if !remap_backend(remap, b) {
                    s.state = HoldState::Free;
                }
            }
        }
    }
}

impl Forwarder {
    /// A first fragment went to `bi`: later fragments of its datagram follow it.
    pub(super) fn first_fragment(&mut self, ip: &Ipv4Info, bi: u16, now: Millis) {
        let key = key_of(ip);
        let f = &mut self.frags;
        f.groups.insert(key, FragVal { backend: bi, expires: now.plus(FRAG_TIMEOUT_MS) });
        for s in &mut f.hold {
            if let HoldState::Waiting(k, _) = s.state {
                if k == key {
                    s.state = HoldState::Released(bi);
                    f.released += 1;
                }
            }
        }
    }

    pub(super) fn later_fragment(&mut self, frame: &mut [u8], ip: &Ipv4Info, now: Millis) -> Verdict {
        let key = key_of(ip);
        if let Some(v) = self.frags.groups.get(&key).copied() {
            if v.expires > now {
                return self.send_to(frame, v.backend, ip.total_len);
            }
        }
        let Some(slot) = self.frags.hold.iter_mut().find(|s| matches!(s.state, HoldState::Free)) else {
            return Verdict::Drop(DropReason::FragmentBufferFull);
        };
        let Some(dst) = slot.buf.get_mut(..frame.len()) else {
            return Verdict::Drop(DropReason::FragmentBufferFull);
        };
        dst.copy_from_slice(frame);
        slot.len = frame.len();
        slot.state = HoldState::Waiting(key, now.plus(FRAG_HOLD_MS));
        Verdict::Held
    }

    /// Frames held for fragments whose first fragment has since been forwarded: each is
    /// rewritten for its real server and passed to `send`, which says whether it went out
    /// (one that did not is counted as `tx_ring_full`).
    pub fn drain_released(&mut self, mut send: impl FnMut(&[u8]) -> bool) {
        if self.frags.released == 0 {
            return;
        }
        for i in 0..self.frags.hold.len() {
            if let HoldState::Released(b) = self.frags.hold[i].state {
                let len = self.frags.hold[i].len;
                let mut buf = [0u8; FRAG_HOLD_BYTES];
                buf[..len].copy_from_slice(&self.frags.hold[i].buf[..len]);
                self.frags.hold[i].state = HoldState::Free;
                let ip_len = len.saturating_sub(crate::wire::ETH_HDR_LEN);
                match self.send_to(&mut buf[..len], b, ip_len) {
                    Verdict::Forward if send(&buf[..len]) => self.counters.event(Event::Forwarded),
                    Verdict::Forward => self.counters.drop(DropReason::TxRingFull),
                    Verdict::Drop(r) => self.counters.drop(r),
                    Verdict::Control | Verdict::Held => {}
                }
            }
        }
        self.frags.released = 0;
    }
}
