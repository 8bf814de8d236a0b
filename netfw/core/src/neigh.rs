//! Real servers' MAC addresses, resolved by the director itself.
//!
//! Requests always carry the DIP as sender IP (seed 001, question 1: a request from the VIP
//! would never be answered, since every real server holds the VIP on `lo`). A server whose MAC
//! is unknown gets no traffic; one that stops answering for three refresh periods gets no new
//! flows (its existing flows keep its last known MAC).

use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::net::Ipv4Addr;

use crate::time::Millis;
use crate::wire::Mac;

/// While unresolved, probe this often.
pub const UNRESOLVED_PROBE_MS: u64 = 1_000;

/// One real server's link-layer state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Neighbour {
    /// Its IP (RIP).
    pub ip: Ipv4Addr,
    /// Last MAC it answered with.
    pub mac: Option<Mac>,
    /// When it last answered.
    pub last_seen: Option<Millis>,
    next_probe: Millis,
}

/// Which entry of the neighbour table a real server is. Only `Targets` makes one, while it
/// registers that server's address, so a backend always holds the entry of its own RIP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NeighId(u16);

impl NeighId {
    /// The entry's position.
    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

/// The addresses to resolve under a new configuration, each registered once.
#[derive(Debug, Default)]
pub struct Targets {
    ips: Vec<Ipv4Addr>,
    index: BTreeMap<Ipv4Addr, NeighId>,
}

impl Targets {
    /// The id of `ip`, registering it if it is new. `None` only past 65536 addresses (the
    /// config allows at most 64 × 1024 real servers).
    pub fn id(&mut self, ip: Ipv4Addr) -> Option<NeighId> {
        if let Some(id) = self.index.get(&ip) {
            return Some(*id);
        }
        let id = NeighId(u16::try_from(self.ips.len()).ok()?);
        self.ips.push(ip);
        self.index.insert(ip, id);
        Some(id)
    }
    /// The registered addresses, in id order.
    pub fn ips(&self) -> &[Ipv4Addr] {
        &self.ips
    }
}

/// How often the table is walked for entries due a probe.
pub const WALK_MS: u64 = 100;

/// The table of real servers to resolve.
#[derive(Debug, Default)]
pub struct Neighbours {
    entries: Vec<Neighbour>,
    by_ip: BTreeMap<Ipv4Addr, usize>,
    refresh_ms: u64,
    next_walk: Millis,
}

impl Neighbours {
    /// Resolve `targets` from now on; entry `i` continues old entry `from[i]` (what is known
    /// of an address that stays is kept).
    pub fn install(&mut self, targets: &Targets, from: &[Option<usize>], refresh_ms: u64, now: Millis) {
        let old = core::mem::take(&mut self.entries);
        self.refresh_ms = refresh_ms.max(100);
        self.entries = targets
            .ips()
            .iter()
            .enumerate()
            .map(|(i, &ip)| {
                from.get(i).copied().flatten().and_then(|j| old.get(j).copied()).filter(|n| n.ip == ip).unwrap_or(Neighbour {
                    ip,
                    mac: None,
                    last_seen: None,
                    next_probe: now,
                })
            })
            .collect();
        self.by_ip = self.entries.iter().enumerate().map(|(i, n)| (n.ip, i)).collect();
        self.next_walk = now;
    }

    /// For each address of `targets`, its entry in `current` (a list of addresses in entry
    /// order), if it has one.
    pub fn carry(current: &[Ipv4Addr], targets: &Targets) -> Vec<Option<usize>> {
        let old: BTreeMap<Ipv4Addr, usize> = current.iter().enumerate().map(|(i, ip)| (*ip, i)).collect();
        targets.ips().iter().map(|ip| old.get(ip).copied()).collect()
    }

    /// Resolve exactly these addresses (tests and simple callers).
    pub fn set_targets(&mut self, ips: &[Ipv4Addr], refresh_ms: u64, now: Millis) {
        let mut t = Targets::default();
        for ip in ips {
            let _ = t.id(*ip);
        }
        let current: Vec<Ipv4Addr> = self.entries.iter().map(|n| n.ip).collect();
        let from = Self::carry(&current, &t);
        self.install(&t, &from, refresh_ms, now);
    }

    /// The entry of a real server.
    pub fn entry(&self, id: NeighId) -> Option<&Neighbour> {
        self.entries.get(id.index())
    }

    /// Index of an address (status, tests).
    pub fn index(&self, ip: Ipv4Addr) -> Option<usize> {
        self.by_ip.get(&ip).copied()
    }

    /// All entries.
    pub fn entries(&self) -> &[Neighbour] {
        &self.entries
    }

    /// MAC of a real server, if ever resolved.
    pub fn mac(&self, id: NeighId) -> Option<Mac> {
        self.entry(id).and_then(|n| n.mac)
    }

    /// May this real server take new flows (answered within three refresh periods)?
    pub fn fresh(&self, id: NeighId, now: Millis) -> bool {
        self.entry(id).and_then(|n| n.last_seen).is_some_and(|t| now.since(t) <= 3 * self.refresh_ms + UNRESOLVED_PROBE_MS)
    }

    /// An ARP packet from `ip` with `mac` was seen. Returns true if the MAC is new or changed.
    pub fn observe(&mut self, ip: Ipv4Addr, mac: Mac, now: Millis) -> bool {
        let Some(n) = self.by_ip.get(&ip).and_then(|&i| self.entries.get_mut(i)) else { return false };
        let changed = n.mac != Some(mac);
        n.mac = Some(mac);
        n.last_seen = Some(now);
        changed
    }

    /// Addresses due for an ARP request now; schedules their next probe. The table is walked
    /// at most every `WALK_MS`, so a large one costs nothing between walks.
    pub fn due(&mut self, now: Millis, mut emit: impl FnMut(Ipv4Addr)) {
        if now < self.next_walk {
            return;
        }
        self.next_walk = now.plus(WALK_MS);
        for n in &mut self.entries {
            if n.next_probe <= now {
                let fresh = n.last_seen.is_some_and(|t| now.since(t) <= self.refresh_ms + UNRESOLVED_PROBE_MS);
                n.next_probe = now.plus(if fresh { self.refresh_ms } else { UNRESOLVED_PROBE_MS });
                emit(n.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_refresh_and_go_stale() {
        let rip = Ipv4Addr::new(198, 18, 0, 11);
        let mut t = Neighbours::default();
        t.set_targets(&[rip], 5_000, Millis(0));
        let id = NeighId(0);
        let mut asked = 0;
        t.due(Millis(0), |_| asked += 1);
        assert_eq!(asked, 1);
        assert!(t.mac(id).is_none() && !t.fresh(id, Millis(0)));
        t.due(Millis(500), |_| asked += 1);
        assert_eq!(asked, 1, "no probe before the retry interval");
        t.due(Millis(1_000), |_| asked += 1);
        assert_eq!(asked, 2, "unresolved: retried every second");
        assert!(t.observe(rip, [2, 0, 0, 0, 0, 11], Millis(1_100)));
        assert!(t.fresh(id, Millis(1_100)));
        t.due(Millis(2_100), |_| asked += 1);
        assert_eq!(asked, 3, "the probe scheduled while unresolved still fires");
        t.due(Millis(3_000), |_| asked += 1);
        assert_eq!(asked, 3, "resolved: refreshed every refresh period");
        assert!(t.fresh(id, Millis(1_100 + 16_000)));
        assert!(!t.fresh(id, Millis(1_100 + 16_001)), "three silent periods: no new flows");
        assert_eq!(t.mac(id), Some([2, 0, 0, 0, 0, 11]), "but the last MAC is kept for existing flows");
        t.set_targets(&[rip, Ipv4Addr::new(198, 18, 0, 12)], 5_000, Millis(20_000));
        assert_eq!(t.mac(id), Some([2, 0, 0, 0, 0, 11]), "a reload keeps what is known");
        assert!(!t.observe(Ipv4Addr::new(198, 18, 0, 99), [9; 6], Millis(0)), "ARP from strangers is ignored");
    }
}
