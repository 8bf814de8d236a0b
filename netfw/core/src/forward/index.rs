//! Finding a packet's service in a probe or two: services of one port by (VIP, protocol, port)
//! in a small open-addressing table, then (on a miss, which only a new flow's packet takes)
//! the services of a port range, then those of every port, in a short list; and the VIPs as a
//! 64-bit bloom word (a client's source address is almost never a VIP, and the word says so
//! without a search). A port is therefore served by its own service first, as in IPVS where
//! an exact service wins over the VIP's port-0 one. Built with the tables of a configuration,
//! off the forwarding loop.

use alloc::vec;
use alloc::vec::Vec;

use super::Service;

#[derive(Clone, Copy, Default)]
struct Slot {
    vip: u32,
    port: u16,
    proto: u8,
    /// Service index + 1; 0 is an empty slot.
    service: u16,
}

/// A service of several ports.
#[derive(Clone, Copy)]
struct Span {
    vip: u32,
    first: u16,
    last: u16,
    proto: u8,
    service: u16,
}

/// The services of a configuration, indexed for the fast path.
pub(super) struct ServiceIndex {
    slots: Vec<Slot>,
    /// Ranges first, then every-port services (validation keeps ranges of one VIP apart).
    spans: Vec<Span>,
    mask: usize,
    vip_bloom: u64,
}

#[inline]
fn hash(vip: u32, proto: u8, port: u16) -> u32 {
    (vip ^ (u32::from(port) << 16) ^ u32::from(proto)).wrapping_mul(0x9e37_79b1)
}

#[inline]
fn bloom_bit(ip: u32) -> u64 {
    1 << (ip.wrapping_mul(0x9e37_79b1) >> 26)
}

impl ServiceIndex {
    pub(super) fn build(services: &[Service]) -> ServiceIndex {
        let n = (services.len() * 2).next_power_of_two().max(16);
        let mut slots = vec![Slot::default(); n];
        let mask = n - 1;
        let mut vip_bloom = 0;
        let mut spans = Vec::new();
        for (i, s) in services.iter().enumerate() {
            let vip = u32::from(s.vip);
            vip_bloom |= bloom_bit(vip);
            let (proto, Ok(service)) = (s.proto.number(), u16::try_from(i + 1)) else { continue };
            if s.port_last != s.port {
                spans.push(Span { vip, first: s.port, last: s.port_last, proto, service });
                continue;
            }
            let mut at = usize::try_from(hash(vip, proto, s.port)).unwrap_or(0) & mask;
            while slots[at].service != 0 {
                at = (at + 1) & mask;
            }
            slots[at] = Slot { vip, port: s.port, proto, service };
        }
        // Every-port services (first port 0) after the ranges.
        spans.sort_by_key(|s: &Span| s.first == 0);
        ServiceIndex { slots, spans, mask, vip_bloom }
    }

    /// The index of the service that serves (`vip`, `proto`, `port`).
    #[inline]
    pub(super) fn get(&self, vip: u32, proto: u8, port: u16) -> Option<usize> {
        self.exact(vip, proto, port).or_else(|| self.span(vip, proto, port))
    }

    #[inline]
    fn exact(&self, vip: u32, proto: u8, port: u16) -> Option<usize> {
        let mut at = usize::try_from(hash(vip, proto, port)).unwrap_or(0) & self.mask;
        loop {
            let s = self.slots.get(at)?;
            if s.service == 0 {
                return None;
            }
            if s.vip == vip && s.port == port && s.proto == proto {
                return Some(usize::from(s.service) - 1);
            }
            at = (at + 1) & self.mask;
        }
    }

    #[cold]
    fn span(&self, vip: u32, proto: u8, port: u16) -> Option<usize> {
        let s = self.spans.iter().find(|s| s.vip == vip && s.proto == proto && s.first <= port && port <= s.last)?;
        Some(usize::from(s.service) - 1)
    }

    /// False only if `ip` is certainly not a VIP.
    #[inline]
    pub(super) fn maybe_vip(&self, ip: u32) -> bool {
        self.vip_bloom & bloom_bit(ip) != 0
    }
}
