//! Finding a packet's service in a probe or two: services by (VIP, protocol, port) in a small
//! open-addressing table, and the VIPs as a 64-bit bloom word (a client's source address is
//! almost never a VIP, and the word says so without a search). Built with the tables of a
//! configuration, off the forwarding loop.

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

/// The services of a configuration, indexed for the fast path.
pub(super) struct ServiceIndex {
    slots: Vec<Slot>,
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
        for (i, s) in services.iter().enumerate() {
            let vip = u32::from(s.vip);
            vip_bloom |= bloom_bit(vip);
            let (proto, Ok(service)) = (s.proto.number(), u16::try_from(i + 1)) else { continue };
            let mut at = usize::try_from(hash(vip, proto, s.port)).unwrap_or(0) & mask;
            while slots[at].service != 0 {
                at = (at + 1) & mask;
            }
            slots[at] = Slot { vip, port: s.port, proto, service };
        }
        ServiceIndex { slots, mask, vip_bloom }
    }

    /// The index of the service at (`vip`, `proto`, `port`).
    #[inline]
    pub(super) fn get(&self, vip: u32, proto: u8, port: u16) -> Option<usize> {
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

    /// False only if `ip` is certainly not a VIP.
    #[inline]
    pub(super) fn maybe_vip(&self, ip: u32) -> bool {
        self.vip_bloom & bloom_bit(ip) != 0
    }
}
