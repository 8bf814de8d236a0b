//! The flow table: 5-tuple → (real server, state, expiry), with a bounded size.
//!
//! When the table is full, a new flow may only take the place of a flow near its hash slot
//! that is expired or not established (SYN_RECV, FIN_WAIT, CLOSE); established flows are never
//! evicted, so a SYN flood recycles its own half-open entries instead of real connections.

use core::net::Ipv4Addr;

use super::map::{AllocError, FixedMap, MapKey};
use super::state::FlowState;
use crate::model::Timeouts;
use crate::time::Millis;

/// How many slots from a new flow's home are searched for an evictable entry.
pub const EVICT_WINDOW: usize = 32;

/// A flow's identity as the client sent it: client address, VIP, client port, virtual port,
/// protocol. Held as two words laid out as the packet carries them (the addresses; the ports
/// and the protocol), so the fast path makes it with two loads and compares it with two.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct FlowKey {
    /// Client address then VIP, in wire order (`u64::from_ne_bytes` of the 8 bytes).
    addrs: u64,
    /// Client port, virtual port (wire order), protocol, then zeros (which no free slot's
    /// key has: `EMPTY_KEY`).
    rest: u64,
}

impl FlowKey {
    /// The key of a flow.
    pub const fn new(client: Ipv4Addr, vip: Ipv4Addr, cport: u16, vport: u16, proto: u8) -> FlowKey {
        let (c, v, cp, vp) = (client.octets(), vip.octets(), cport.to_be_bytes(), vport.to_be_bytes());
        FlowKey::from_wire([c[0], c[1], c[2], c[3], v[0], v[1], v[2], v[3]], [cp[0], cp[1], vp[0], vp[1]], proto)
    }

    /// The key from a packet's bytes: source and destination address (8 bytes), source and
    /// destination port (4 bytes), protocol.
    #[inline(always)]
    pub const fn from_wire(addrs: [u8; 8], ports: [u8; 4], proto: u8) -> FlowKey {
        FlowKey { addrs: u64::from_ne_bytes(addrs), rest: u64::from_ne_bytes([ports[0], ports[1], ports[2], ports[3], proto, 0, 0, 0]) }
    }

    /// Client address.
    pub fn client(&self) -> Ipv4Addr {
        let b = self.addrs.to_ne_bytes();
        Ipv4Addr::new(b[0], b[1], b[2], b[3])
    }

    /// Virtual IP.
    pub fn vip(&self) -> Ipv4Addr {
        let b = self.addrs.to_ne_bytes();
        Ipv4Addr::new(b[4], b[5], b[6], b[7])
    }

    /// Client port.
    pub fn cport(&self) -> u16 {
        let b = self.rest.to_ne_bytes();
        u16::from_be_bytes([b[0], b[1]])
    }

    /// Virtual port.
    pub fn vport(&self) -> u16 {
        let b = self.rest.to_ne_bytes();
        u16::from_be_bytes([b[2], b[3]])
    }

    /// IP protocol number.
    pub fn proto(&self) -> u8 {
        self.rest.to_ne_bytes()[4]
    }
}

impl core::fmt::Debug for FlowKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "FlowKey({} {}:{} -> {}:{})", self.proto(), self.client(), self.cport(), self.vip(), self.vport())
    }
}

impl MapKey for FlowKey {
    #[inline(always)]
    fn words(&self) -> [u64; 2] {
        [self.addrs, self.rest]
    }
}

/// What a flow maps to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowVal {
    /// Index of the backend (service + real server) in the forwarder.
    pub backend: u16,
    /// Inferred state.
    pub state: FlowState,
    /// Expiry, in 100 ms ticks since start.
    pub expires: u32,
    /// The kernel forwards this flow's packets too (an entry in the kernel's flow map, which
    /// netfw's XDP or tc program reads, was asked for): its expiry here is only refreshed by
    /// the packets netfw sees, so the kernel's last-seen time decides when it is idle.
    pub kernel: bool,
}

/// What a lookup found.
#[derive(Debug)]
pub enum Hit<'a> {
    /// A live flow, to update in place, with each state's timeout in ticks (indexed by the
    /// state) for its new expiry.
    Live(&'a mut FlowVal, &'a [u32; FlowState::COUNT]),
    /// The flow had expired: it was removed, here is what it was.
    Expired(FlowVal),
    /// No flow.
    Miss,
}

/// What the kernel knows of a flow it forwards, when the sweep finds it expired here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Idle {
    /// The kernel last forwarded a packet of it then.
    SeenAt(Millis),
    /// The kernel has no entry for it (or no packet): it is idle; drop it.
    Gone,
    /// Not now (its kernel entry could not be queued for removal): try again later.
    Keep,
}

/// Why a flow could not be inserted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InsertError {
    /// Full, and nothing near the new flow's slot may be evicted.
    Full,
}

/// Convert a time to 100 ms ticks (saturating; 13 years fit).
pub fn ticks(now: Millis) -> u32 {
    u32::try_from(now.0 / 100).unwrap_or(u32::MAX)
}

/// The flow table.
#[derive(Debug)]
pub struct FlowTable {
    map: FixedMap<FlowKey, FlowVal>,
    cursor: usize,
    /// Each state's timeout in ticks, indexed by the state: the fast path's refresh is one
    /// load and one add.
    life: [u32; FlowState::COUNT],
}

fn life_of(t: &Timeouts) -> [u32; FlowState::COUNT] {
    FlowState::ALL.map(|s| s.timeout_s(t).saturating_mul(10))
}

/// A free slot's key: no key `FlowKey::new` makes (their last three bytes are zeros).
const EMPTY_KEY: FlowKey = FlowKey { addrs: 0, rest: u64::MAX };
const EMPTY_VAL: FlowVal = FlowVal { backend: 0, state: FlowState::Close, expires: 0, kernel: false };

impl FlowTable {
    /// A table for `capacity` flows, allocated now (aborts without the memory; tests).
    pub fn new(capacity: usize, seed: u64, timeouts: Timeouts) -> Self {
        FlowTable { map: FixedMap::new(capacity, seed, EMPTY_KEY, EMPTY_VAL), cursor: 0, life: life_of(&timeouts) }
    }

    /// A table for `capacity` flows, or an error if its memory cannot be had.
    pub fn try_new(capacity: usize, seed: u64, timeouts: Timeouts) -> Result<Self, AllocError> {
        Ok(FlowTable { map: FixedMap::try_new(capacity, seed, EMPTY_KEY, EMPTY_VAL)?, cursor: 0, life: life_of(&timeouts) })
    }

    /// Bytes a table of `capacity` flows holds.
    pub fn bytes_for(capacity: usize) -> usize {
        FixedMap::<FlowKey, FlowVal>::bytes_for(capacity)
    }

    /// Put a flow carried over from another table (a capacity change) in place, as it was.
    /// False if this table is full.
    pub fn adopt(&mut self, key: FlowKey, val: FlowVal) -> bool {
        self.map.insert(key, val)
    }

    /// Flows stored (including expired ones not yet swept).
    pub fn len(&self) -> usize {
        self.map.len()
    }
    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
    /// Capacity in flows.
    pub fn capacity(&self) -> usize {
        self.map.capacity()
    }
    /// Memory the table holds, divided by its capacity.
    pub fn bytes_per_flow(&self) -> usize {
        FixedMap::<FlowKey, FlowVal>::slot_bytes() * self.map.slot_count() / self.map.capacity()
    }

    /// When a flow moved to `state` now expires, in ticks.
    fn expiry(&self, state: FlowState, now: Millis) -> u32 {
        ticks(now).saturating_add(self.life[state as usize])
    }

    /// New timeouts (a reload); flows already stored keep their expiry until their next packet.
    pub fn set_timeouts(&mut self, t: Timeouts) {
        self.life = life_of(&t);
    }

    /// The flow of `key`, hashed once: live (to update in place), expired (removed now), or
    /// none. A flow the kernel forwards is live until the sweep finds it idle there.
    #[inline(always)]
    pub fn hit(&mut self, key: &FlowKey, now_ticks: u32) -> Hit<'_> {
        let Some(i) = self.map.find(key) else { return Hit::Miss };
        let v = self.map.val_mut(i);
        if v.expires <= now_ticks && !v.kernel {
            return Hit::Expired(self.map.remove_index(i));
        }
        Hit::Live(self.map.val_mut(i), &self.life)
    }

    /// Look up a live flow. An expired entry is removed and reported through `on_remove`.
    pub fn lookup(&mut self, key: &FlowKey, now: Millis, on_remove: impl FnOnce(&FlowVal)) -> Option<FlowVal> {
        let v = *self.map.get(key)?;
        if v.expires <= ticks(now) {
            self.map.remove(key);
            on_remove(&v);
            return None;
        }
        Some(v)
    }

    /// A live flow, without refreshing or removing anything (ICMP errors do not keep flows
    /// alive).
    pub fn peek(&self, key: &FlowKey, now: Millis) -> Option<FlowVal> {
        self.map.get(key).copied().filter(|v| v.kernel || v.expires > ticks(now))
    }

    /// Move a flow to `state` and refresh its expiry. Returns the previous state.
    pub fn touch(&mut self, key: &FlowKey, state: FlowState, now: Millis) -> Option<FlowState> {
        let exp = self.expiry(state, now);
        let v = self.map.get_mut(key)?;
        let old = v.state;
        v.state = state;
        v.expires = exp;
        Some(old)
    }

    /// Insert a new flow. When full, evicts a nearby expired or non-established flow (reported
    /// through `on_evict`); if there is none, refuses.
    pub fn insert(
        &mut self,
        key: FlowKey,
        backend: u16,
        state: FlowState,
        now: Millis,
        on_evict: impl FnOnce(&FlowVal),
    ) -> Result<(), InsertError> {
        let val = FlowVal { backend, state, expires: self.expiry(state, now), kernel: false };
        if self.map.is_full() {
            let t = ticks(now);
            // A flow the kernel forwards is never evicted: its kernel entry must go with it.
            let victim = self.map.evict_near(&key, EVICT_WINDOW, |_, v| !v.kernel && (v.expires <= t || v.state.evictable()));
            match victim {
                Some((_, v)) => on_evict(&v),
                None => return Err(InsertError::Full),
            }
        }
        if self.map.insert(key, val) {
            Ok(())
        } else {
            Err(InsertError::Full)
        }
    }

    /// Remove a flow.
    pub fn remove(&mut self, key: &FlowKey) -> Option<FlowVal> {
        self.map.remove(key)
    }

    /// Remove up to `budget` slots' worth of expired flows, reporting each.
    pub fn sweep(&mut self, now: Millis, budget: usize, mut on_remove: impl FnMut(&FlowVal)) -> usize {
        self.sweep_with(now, budget, |_| Idle::Gone, |_, _| {}, |_, v| on_remove(v))
    }

    /// `sweep`, asking `kernel` about each expired flow the kernel forwards: one it saw a
    /// packet of lately lives on from then; one it cannot drop now (`Idle::Keep`) stays for a
    /// later sweep. Each flow that stays is shown to `on_live` (persistence templates are held
    /// while their flows live).
    pub fn sweep_with(
        &mut self,
        now: Millis,
        budget: usize,
        mut kernel: impl FnMut(&FlowKey) -> Idle,
        mut on_live: impl FnMut(&FlowKey, &FlowVal),
        mut on_remove: impl FnMut(&FlowKey, &FlowVal),
    ) -> usize {
        let t = ticks(now);
        let life = self.life;
        self.map.sweep(
            &mut self.cursor,
            budget,
            |k, v| {
                let mut gone = || {
                    if v.expires > t {
                        return false;
                    }
                    if !v.kernel {
                        return true;
                    }
                    match kernel(k) {
                        Idle::SeenAt(seen) => {
                            let until = ticks(seen).saturating_add(life[v.state as usize]);
                            if until > t {
                                v.expires = until;
                                return false;
                            }
                            true
                        }
                        Idle::Gone => true,
                        Idle::Keep => false,
                    }
                };
                let gone = gone();
                if !gone {
                    on_live(k, v);
                }
                gone
            },
            |k, v| on_remove(k, v),
        )
    }

    /// After the kernel's flow map was emptied (a reload that moved real servers): no flow is
    /// forwarded there any more, and each that was lives for one more idle timeout from now
    /// (netfw did not see its packets).
    pub fn forget_kernel(&mut self, now: Millis) {
        let life = self.life;
        let t = ticks(now);
        self.map.retain_map(|_, v| {
            if v.kernel {
                v.kernel = false;
                v.expires = v.expires.max(t.saturating_add(life[v.state as usize]));
            }
            true
        });
    }

    /// Rewrite backends after a reload: `remap` gives the new index, or `None` to drop the flow
    /// (its real server is gone); `on_drop` sees each dropped flow.
    pub fn remap(&mut self, mut remap: impl FnMut(u16) -> Option<u16>, mut on_drop: impl FnMut(&FlowVal)) {
        self.map.retain_map(|_, v| match remap(v.backend) {
            Some(n) => {
                v.backend = n;
                true
            }
            None => {
                on_drop(v);
                false
            }
        });
    }

    /// Visit the flows of up to `budget` slots from slot `from`; where to go on from, or
    /// `None` when the whole table was visited (the pair's table transfer, a slice a turn).
    pub fn walk(&self, from: usize, budget: usize, f: impl FnMut(&FlowKey, &FlowVal)) -> Option<usize> {
        self.map.walk(from, budget, f)
    }

    /// All flows (status and tests).
    pub fn iter(&self) -> impl Iterator<Item = (&FlowKey, &FlowVal)> {
        self.map.iter()
    }
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation, reason = "test values are small")]
mod tests {
    use super::*;
    use crate::wire::frame::tcp_flags::{ACK, FIN, RST};

    #[test]
    fn a_flow_key_gives_back_what_it_was_made_of_and_is_never_a_free_slots_key() {
        let k = FlowKey::new(Ipv4Addr::new(198, 51, 100, 2), Ipv4Addr::new(203, 0, 113, 10), 40000, 80, 6);
        assert_eq!(
            (k.client(), k.vip(), k.cport(), k.vport(), k.proto()),
            (Ipv4Addr::new(198, 51, 100, 2), Ipv4Addr::new(203, 0, 113, 10), 40000, 80, 6)
        );
        let wire = FlowKey::from_wire([198, 51, 100, 2, 203, 0, 113, 10], [0x9c, 0x40, 0, 80], 6);
        assert_eq!(wire, k);
        for zero in [FlowKey::new(Ipv4Addr::UNSPECIFIED, Ipv4Addr::UNSPECIFIED, 0, 0, 0), FlowKey::from_wire([0xff; 8], [0xff; 4], 0xff)] {
            assert_ne!(zero, EMPTY_KEY);
        }
        // A lookup of any key in an empty table finds nothing (never a free slot).
        let mut t = FlowTable::new(16, 1, Timeouts::default());
        assert!(matches!(t.hit(&FlowKey::new(Ipv4Addr::UNSPECIFIED, Ipv4Addr::UNSPECIFIED, 0, 0, 0), 0), Hit::Miss));
    }

    fn key(n: u16) -> FlowKey {
        FlowKey::new(Ipv4Addr::new(198, 51, 100, 2), Ipv4Addr::new(203, 0, 113, 10), n, 80, 6)
    }

    #[test]
    fn flows_expire_by_state_with_a_fake_clock() {
        let mut t = FlowTable::new(16, 1, Timeouts::default());
        let t0 = Millis(1_000);
        t.insert(key(1), 0, FlowState::SynRecv, t0, |_| {}).unwrap();
        // SYN_RECV lives 60 s.
        assert!(t.lookup(&key(1), t0.plus(59_900), |_| {}).is_some());
        let mut removed = 0;
        assert!(t.lookup(&key(1), t0.plus(60_000), |_| removed += 1).is_none());
        assert_eq!(removed, 1);

        // Established lives 900 s from the last packet.
        t.insert(key(2), 0, FlowState::SynRecv, t0, |_| {}).unwrap();
        t.touch(&key(2), FlowState::SynRecv.next_tcp(ACK).next_tcp(ACK), t0.plus(1_000));
        assert!(t.lookup(&key(2), t0.plus(1_000 + 899_000), |_| {}).is_some());
        assert!(t.lookup(&key(2), t0.plus(1_000 + 900_000), |_| {}).is_none());

        // FIN: 120 s; RST: 10 s.
        t.insert(key(3), 0, FlowState::Established, t0, |_| {}).unwrap();
        t.touch(&key(3), FlowState::Established.next_tcp(FIN | ACK), t0);
        assert!(t.lookup(&key(3), t0.plus(119_000), |_| {}).is_some());
        assert!(t.lookup(&key(3), t0.plus(120_000), |_| {}).is_none());
        t.insert(key(4), 0, FlowState::Established, t0, |_| {}).unwrap();
        t.touch(&key(4), FlowState::Established.next_tcp(RST), t0);
        assert!(t.lookup(&key(4), t0.plus(9_900), |_| {}).is_some());
        assert!(t.lookup(&key(4), t0.plus(10_000), |_| {}).is_none());

        // UDP: 300 s, and the sweeper removes it without a lookup.
        t.insert(key(5), 0, FlowState::Udp, t0, |_| {}).unwrap();
        let mut swept = 0;
        t.sweep(t0.plus(299_000), 1 << 20, |_| swept += 1);
        assert_eq!(swept, 0);
        t.sweep(t0.plus(300_000), 1 << 20, |_| swept += 1);
        assert_eq!(swept, 1);
        assert!(t.is_empty());
    }

    #[test]
    fn full_table_never_evicts_established_for_a_syn() {
        let cap = 64;
        let mut t = FlowTable::new(cap, 9, Timeouts::default());
        let now = Millis(0);
        for i in 0..cap as u16 {
            t.insert(key(i), 0, FlowState::Established, now, |_| {}).unwrap();
        }
        assert_eq!(t.insert(key(1000), 0, FlowState::SynRecv, now, |_| panic!("evicted an established flow")), Err(InsertError::Full));
        for i in 0..cap as u16 {
            assert!(t.lookup(&key(i), now, |_| {}).is_some());
        }
    }

    #[test]
    fn full_table_of_half_open_flows_recycles_them() {
        let cap = 64;
        let mut t = FlowTable::new(cap, 9, Timeouts::default());
        let now = Millis(0);
        for i in 0..cap as u16 {
            t.insert(key(i), 0, FlowState::SynRecv, now, |_| {}).unwrap();
        }
        let mut evicted = 0;
        let mut ok = 0;
        for i in 1000..1100 {
            if t.insert(key(i), 0, FlowState::SynRecv, now, |_| evicted += 1).is_ok() {
                ok += 1;
            }
        }
        assert_eq!(ok, evicted, "every insert into the full table evicted exactly one half-open flow");
        assert!(ok > 50, "most new SYNs find a half-open victim nearby ({ok})");
        assert_eq!(t.len(), cap);
    }
}
