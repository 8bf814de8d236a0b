//! Real servers' MAC addresses, resolved by the director itself.
//!
//! Requests always carry the DIP as sender IP (seed 001, question 1: a request from the VIP
//! would never be answered, since every real server holds the VIP on `lo`). A server whose MAC
//! is unknown gets no traffic; one that stops answering for three refresh periods gets no new
//! flows (its existing flows keep its last known MAC).

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

/// The table of real servers to resolve.
#[derive(Debug, Default)]
pub struct Neighbours {
    entries: Vec<Neighbour>,
    refresh_ms: u64,
}

impl Neighbours {
    /// Resolve these addresses from now on, keeping what is known of addresses that stay.
    pub fn set_targets(&mut self, ips: &[Ipv4Addr], refresh_ms: u64, now: Millis) {
        let old = core::mem::take(&mut self.entries);
        self.refresh_ms = refresh_ms.max(100);
        self.entries = ips
            .iter()
            .map(|&ip| old.iter().find(|n| n.ip == ip).copied().unwrap_or(Neighbour { ip, mac: None, last_seen: None, next_probe: now }))
            .collect();
    }

    /// Index of an address.
    pub fn index(&self, ip: Ipv4Addr) -> Option<usize> {
        self.entries.iter().position(|n| n.ip == ip)
    }

    /// All entries.
    pub fn entries(&self) -> &[Neighbour] {
        &self.entries
    }

    /// MAC of entry `i`, if ever resolved.
    pub fn mac(&self, i: usize) -> Option<Mac> {
        self.entries.get(i).and_then(|n| n.mac)
    }

    /// May entry `i` take new flows (answered within three refresh periods)?
    pub fn fresh(&self, i: usize, now: Millis) -> bool {
        self.entries.get(i).and_then(|n| n.last_seen).is_some_and(|t| now.since(t) <= 3 * self.refresh_ms + UNRESOLVED_PROBE_MS)
    }

    /// An ARP packet from `ip` with `mac` was seen. Returns true if the MAC is new or changed.
    pub fn observe(&mut self, ip: Ipv4Addr, mac: Mac, now: Millis) -> bool {
        let Some(n) = self.entries.iter_mut().find(|n| n.ip == ip) else { return false };
        let changed = n.mac != Some(mac);
        n.mac = Some(mac);
        n.last_seen = Some(now);
        changed
    }

    /// Addresses due for an ARP request now; schedules their next probe.
    pub fn due(&mut self, now: Millis, mut emit: impl FnMut(Ipv4Addr)) {
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
        let mut asked = 0;
        t.due(Millis(0), |_| asked += 1);
        assert_eq!(asked, 1);
        assert!(t.mac(0).is_none() && !t.fresh(0, Millis(0)));
        t.due(Millis(500), |_| asked += 1);
        assert_eq!(asked, 1, "no probe before the retry interval");
        t.due(Millis(1_000), |_| asked += 1);
        assert_eq!(asked, 2, "unresolved: retried every second");
        assert!(t.observe(rip, [2, 0, 0, 0, 0, 11], Millis(1_100)));
        assert!(t.fresh(0, Millis(1_100)));
        t.due(Millis(2_100), |_| asked += 1);
        assert_eq!(asked, 3, "the probe scheduled while unresolved still fires");
        t.due(Millis(3_000), |_| asked += 1);
        assert_eq!(asked, 3, "resolved: refreshed every refresh period");
        assert!(t.fresh(0, Millis(1_100 + 16_000)));
        assert!(!t.fresh(0, Millis(1_100 + 16_001)), "three silent periods: no new flows");
        assert_eq!(t.mac(0), Some([2, 0, 0, 0, 0, 11]), "but the last MAC is kept for existing flows");
        t.set_targets(&[rip, Ipv4Addr::new(198, 18, 0, 12)], 5_000, Millis(20_000));
        assert_eq!(t.mac(0), Some([2, 0, 0, 0, 0, 11]), "a reload keeps what is known");
        assert!(!t.observe(Ipv4Addr::new(198, 18, 0, 99), [9; 6], Millis(0)), "ARP from strangers is ignored");
    }
}
