//! Schedulers: which real server gets a new flow.
//!
//! The IPVS set: rr, wrr, lc, wlc, sh, mh (Maglev with a prime table of 65537). Tables are
//! built when a config is applied; picking allocates nothing. A candidate that is not usable
//! (weight 0 = draining, or its MAC is unknown) never receives a new flow.

mod maglev;

use alloc::vec;
use alloc::vec::Vec;
use core::net::Ipv4Addr;

use crate::model::SchedKind;

pub use maglev::{MaglevTable, MAGLEV_SIZE};

/// What a scheduler may know about one real server when picking.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Candidate {
    /// Configured weight (0 = drain).
    pub weight: u16,
    /// False when the server must get no new flow (MAC unknown or stale).
    pub reachable: bool,
    /// Established flows.
    pub active: u32,
    /// Other live flows.
    pub inactive: u32,
}

impl Candidate {
    /// May this server take a new flow?
    pub fn usable(&self) -> bool {
        self.weight > 0 && self.reachable
    }
    /// IPVS's connection overhead: active flows weigh 256 times an inactive one.
    fn overhead(&self) -> u64 {
        (u64::from(self.active) << 8) + u64::from(self.inactive)
    }
}

/// Number of buckets of the source-hash table (as IPVS).
pub const SH_BUCKETS: usize = 256;

/// A scheduler with its state.
#[derive(Debug)]
pub enum Scheduler {
    /// Round robin: the next usable server.
    Rr { next: usize },
    /// Smooth weighted round robin.
    Wrr { current: Vec<i64> },
    /// Least connections.
    Lc,
    /// Weighted least connections.
    Wlc,
    /// Source hashing over weighted buckets.
    Sh { buckets: Vec<u16> },
    /// Maglev hashing.
    Mh { table: MaglevTable },
}

/// Hash a client address with a seed (stable across restarts: sh/mh affinity must not change
/// when the director restarts).
pub fn client_hash(ip: Ipv4Addr, seed: u32) -> u32 {
    let mut x = u64::from(u32::from(ip)) ^ (u64::from(seed) << 32) ^ 0x9e37_79b9_7f4a_7c15;
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^= x >> 33;
    (x & 0xffff_ffff) as u32
}

impl Scheduler {
    /// Build a scheduler for servers with these addresses and weights.
    pub fn new(kind: SchedKind, servers: &[(Ipv4Addr, u16)]) -> Self {
        match kind {
            SchedKind::Rr => Scheduler::Rr { next: 0 },
            SchedKind::Wrr => Scheduler::Wrr { current: vec![0; servers.len()] },
            SchedKind::Lc => Scheduler::Lc,
            SchedKind::Wlc => Scheduler::Wlc,
            SchedKind::Sh => Scheduler::Sh { buckets: sh_buckets(servers) },
            SchedKind::Mh => Scheduler::Mh { table: MaglevTable::new(servers) },
        }
    }

    /// Pick a server index for a new flow from `client`, or `None` if no server is usable.
    pub fn pick(&mut self, cands: &[Candidate], client: Ipv4Addr) -> Option<usize> {
        if !cands.iter().any(Candidate::usable) {
            return None;
        }
        match self {
            Scheduler::Rr { next } => {
                let n = cands.len();
                let i = (0..n).map(|k| (*next + k) % n).find(|&i| cands[i].usable())?;
                *next = (i + 1) % n;
                Some(i)
            }
            Scheduler::Wrr { current } => {
                let mut total = 0i64;
                let mut best: Option<usize> = None;
                for (i, c) in cands.iter().enumerate() {
                    if !c.usable() {
                        continue;
                    }
                    let w = i64::from(c.weight);
                    *current.get_mut(i)? += w;
                    total += w;
                    if best.is_none_or(|b| current[i] > current[b]) {
                        best = Some(i);
                    }
                }
                let b = best?;
                current[b] -= total;
                Some(b)
            }
            Scheduler::Lc => least(cands, |a, b| a.overhead() < b.overhead()),
            Scheduler::Wlc => least(cands, |a, b| {
                // a.overhead / a.weight < b.overhead / b.weight without division
                u128::from(a.overhead()) * u128::from(b.weight) < u128::from(b.overhead()) * u128::from(a.weight)
            }),
            Scheduler::Sh { buckets } => {
                if buckets.is_empty() {
                    return None;
                }
                let h = client_hash(client, 0) as usize;
                (0..buckets.len())
                    .map(|k| usize::from(buckets[(h + k) % buckets.len()]))
                    .find(|&i| cands.get(i).is_some_and(Candidate::usable))
            }
            Scheduler::Mh { table } => {
                table.lookup(client, |i| cands.get(i).is_some_and(Candidate::usable)).or_else(|| cands.iter().position(Candidate::usable))
            }
        }
    }
}

fn least(cands: &[Candidate], better: impl Fn(&Candidate, &Candidate) -> bool) -> Option<usize> {
    let mut best: Option<usize> = None;
    for (i, c) in cands.iter().enumerate() {
        if c.usable() && best.is_none_or(|b| better(c, &cands[b])) {
            best = Some(i);
        }
    }
    best
}

/// IPVS-style source-hash buckets: servers take buckets in turn, each as many consecutive
/// turns as its weight allows, skipping weight-0 servers.
fn sh_buckets(servers: &[(Ipv4Addr, u16)]) -> Vec<u16> {
    let live: Vec<(usize, u16)> = servers.iter().enumerate().filter(|(_, (_, w))| *w > 0).map(|(i, (_, w))| (i, *w)).collect();
    if live.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::with_capacity(SH_BUCKETS);
    let mut k = 0;
    while out.len() < SH_BUCKETS {
        let (i, w) = live[k % live.len()];
        for _ in 0..w.min(16) {
            if out.len() < SH_BUCKETS {
                out.push(u16::try_from(i).unwrap_or(u16::MAX));
            }
        }
        k += 1;
    }
    out
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation, reason = "test values are small")]
mod tests {
    use super::*;

    fn cands(ws: &[u16]) -> Vec<Candidate> {
        ws.iter().map(|&w| Candidate { weight: w, reachable: true, active: 0, inactive: 0 }).collect()
    }
    fn servers(ws: &[u16]) -> Vec<(Ipv4Addr, u16)> {
        ws.iter().enumerate().map(|(i, &w)| (Ipv4Addr::new(198, 18, 0, 11 + i as u8), w)).collect()
    }
    fn counts(kind: SchedKind, ws: &[u16], n: usize) -> Vec<usize> {
        let mut s = Scheduler::new(kind, &servers(ws));
        let c = cands(ws);
        let mut out = vec![0; ws.len()];
        for k in 0..n {
            out[s.pick(&c, Ipv4Addr::from(0xc633_6400 + k as u32)).unwrap()] += 1;
        }
        out
    }

    #[test]
    fn rr_is_even_and_skips_drained() {
        assert_eq!(counts(SchedKind::Rr, &[1, 1, 1], 30), vec![10, 10, 10]);
        assert_eq!(counts(SchedKind::Rr, &[1, 0, 1], 30), vec![15, 0, 15]);
    }

    #[test]
    fn wrr_is_proportional_and_smooth() {
        assert_eq!(counts(SchedKind::Wrr, &[3, 2, 1], 60), vec![30, 20, 10]);
        let mut s = Scheduler::new(SchedKind::Wrr, &servers(&[3, 2, 1]));
        let c = cands(&[3, 2, 1]);
        let seq: Vec<usize> = (0..6).map(|_| s.pick(&c, Ipv4Addr::LOCALHOST).unwrap()).collect();
        assert_eq!(seq, vec![0, 1, 0, 2, 1, 0], "smooth: the heavy server is spread, not bunched");
    }

    #[test]
    fn lc_and_wlc_prefer_fewer_connections() {
        let mut c = cands(&[1, 1, 1]);
        c[0].active = 5;
        c[1].active = 1;
        c[2].active = 1;
        c[2].inactive = 3;
        assert_eq!(Scheduler::new(SchedKind::Lc, &servers(&[1, 1, 1])).pick(&c, Ipv4Addr::LOCALHOST), Some(1));
        let mut c = cands(&[1, 4]);
        c[0].active = 2;
        c[1].active = 4; // 4/4 < 2/1
        assert_eq!(Scheduler::new(SchedKind::Wlc, &servers(&[1, 4])).pick(&c, Ipv4Addr::LOCALHOST), Some(1));
        c[1].weight = 0;
        assert_eq!(Scheduler::new(SchedKind::Wlc, &servers(&[1, 0])).pick(&c, Ipv4Addr::LOCALHOST), Some(0), "weight 0 drains");
    }

    #[test]
    fn sh_and_mh_keep_a_client_on_one_server_and_spread_clients() {
        for kind in [SchedKind::Sh, SchedKind::Mh] {
            let ws = [1, 1, 1];
            let mut s = Scheduler::new(kind, &servers(&ws));
            let c = cands(&ws);
            let mut seen = [0usize; 3];
            for k in 0..300u32 {
                let client = Ipv4Addr::from(0xc633_6400 + k);
                let first = s.pick(&c, client).unwrap();
                for _ in 0..5 {
                    assert_eq!(s.pick(&c, client), Some(first), "{kind:?} moved a client");
                }
                seen[first] += 1;
            }
            assert!(seen.iter().all(|&n| n > 50), "{kind:?} spreads clients: {seen:?}");
        }
    }

    #[test]
    fn unusable_servers_get_nothing_and_none_usable_is_none() {
        for (kind, _) in SchedKind::ALL.iter().map(|(n, k)| (*k, n)) {
            let mut c = cands(&[1, 1, 1]);
            c[1].reachable = false;
            let mut s = Scheduler::new(kind, &servers(&[1, 1, 1]));
            for k in 0..100u32 {
                assert_ne!(s.pick(&c, Ipv4Addr::from(k)), Some(1), "{kind:?}");
            }
            for x in &mut c {
                x.weight = 0;
            }
            assert_eq!(s.pick(&c, Ipv4Addr::LOCALHOST), None, "{kind:?}");
        }
    }
}
