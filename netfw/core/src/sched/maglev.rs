//! Maglev consistent hashing (Eisenbud et al., NSDI 2016), as IPVS's `mh` scheduler.
//!
//! The lookup table has a prime size (65537), each server fills it following its own
//! permutation derived from its address (so a server keeps its slots when others come and go),
//! taking turns in proportion to its weight.

use alloc::vec;
use alloc::vec::Vec;
use core::net::Ipv4Addr;

use super::client_hash;

/// Table size: a prime ≥ 65537, as IPVS's default.
pub const MAGLEV_SIZE: usize = 65537;

const EMPTY: u16 = u16::MAX;

/// A populated Maglev lookup table.
#[derive(Debug)]
pub struct MaglevTable {
    entries: Vec<u16>,
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

impl MaglevTable {
    /// Populate the table for servers (address, weight); weight-0 servers get no slots.
    pub fn new(servers: &[(Ipv4Addr, u16)]) -> Self {
        let m = MAGLEV_SIZE as u64;
        let live: Vec<usize> = (0..servers.len()).filter(|&i| servers[i].1 > 0).collect();
        if live.is_empty() {
            return MaglevTable { entries: Vec::new() };
        }
        let g = live.iter().fold(0u32, |g, &i| gcd(g, u32::from(servers[i].1)));
        let max_turns = live.iter().map(|&i| u32::from(servers[i].1) / g).max().unwrap_or(1);
        let perm: Vec<(u64, u64)> = live
            .iter()
            .map(|&i| {
                let ip = servers[i].0;
                let offset = u64::from(client_hash(ip, 0x6d61_676c)) % m;
                let skip = u64::from(client_hash(ip, 0x6576_2121)) % (m - 1) + 1;
                (offset, skip)
            })
            .collect();
        let mut next = vec![0u64; live.len()];
        let mut entries = vec![EMPTY; MAGLEV_SIZE];
        let mut filled = 0usize;
        'fill: loop {
            for round in 0..max_turns {
                for (k, &i) in live.iter().enumerate() {
                    if u32::from(servers[i].1) / g <= round {
                        continue;
                    }
                    let (offset, skip) = perm[k];
                    loop {
                        let c = usize::try_from((offset + next[k] * skip) % m).unwrap_or(0);
                        next[k] += 1;
                        if entries[c] == EMPTY {
                            entries[c] = u16::try_from(i).unwrap_or(EMPTY);
                            filled += 1;
                            break;
                        }
                    }
                    if filled == MAGLEV_SIZE {
                        break 'fill;
                    }
                }
            }
        }
        MaglevTable { entries }
    }

    /// The server for `client`; if it is not `usable`, rehash a few times (IPVS's fallback).
    pub fn lookup(&self, client: Ipv4Addr, usable: impl Fn(usize) -> bool) -> Option<usize> {
        if self.entries.is_empty() {
            return None;
        }
        (0..8u32).map(|seed| usize::from(self.entries[client_hash(client, seed) as usize % MAGLEV_SIZE])).find(|&i| usable(i))
    }

    /// The server for a flow whose (stable, unseeded) hash is `h`; if it is not `usable`,
    /// rehash a few times. The same flow always lands on the same server while the servers
    /// stay, on this director and on any other running the same config.
    pub fn lookup_flow(&self, h: u64, usable: impl Fn(usize) -> bool) -> Option<usize> {
        if self.entries.is_empty() {
            return None;
        }
        (0..8u64)
            .map(|k| {
                let x = (h ^ k.wrapping_mul(0x9e37_79b9_7f4a_7c15)).wrapping_mul(0xff51_afd7_ed55_8ccd);
                usize::try_from((x >> 32) % MAGLEV_SIZE as u64).unwrap_or(0)
            })
            .map(|slot| usize::from(self.entries[slot]))
            .find(|&i| usable(i))
    }

    /// How many slots each server index holds (tests, status).
    pub fn share(&self, servers: usize) -> Vec<usize> {
        let mut out = vec![0; servers];
        for &e in &self.entries {
            if let Some(x) = out.get_mut(usize::from(e)) {
                *x += 1;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> Ipv4Addr {
        Ipv4Addr::new(198, 18, 0, n)
    }

    #[test]
    fn slots_follow_weights_and_survive_a_removal() {
        let t = MaglevTable::new(&[(ip(11), 1), (ip(12), 1), (ip(13), 2)]);
        let share = t.share(3);
        assert_eq!(share.iter().sum::<usize>(), MAGLEV_SIZE);
        let ratio = share[2] as f64 / share[0] as f64;
        assert!((1.8..2.2).contains(&ratio), "weight 2 holds twice the slots: {share:?}");

        // Removing server 12 moves only its own slots (minimal disruption).
        let t2 = MaglevTable::new(&[(ip(11), 1), (ip(12), 0), (ip(13), 2)]);
        let moved = (0..MAGLEV_SIZE).filter(|&c| t.entries[c] != 1 && t.entries[c] != t2.entries[c]).count();
        assert!(moved < MAGLEV_SIZE / 20, "only a few slots of the remaining servers move: {moved}");
    }
}
