//! Persistence templates: the real server a client was given, per service or per persistence
//! group, kept for `persistence_s` after the client's last new connection (IPVS's templates,
//! the `NONE` entries seed 001 watches with `ipvsadm -L -n -c`).
//!
//! One table per box, shared by its forwarders (one per group of receive queues): RSS spreads
//! one client's connections over the queues by their ports, and a group must send FTP's
//! control and passive data connections to one server whichever forwarder sees them. The
//! table is touched when a flow is created and by the timers, never per packet of a known
//! flow; it is split in stripes by client address, each behind a spin lock, so forwarders
//! creating flows for different clients rarely meet.
//!
//! A template names its real server by address, not by backend index: it survives a reload,
//! and a group's services each find that server among their own.
//!
//! As IPVS keeps a template while connections it controls live, the flow table's sweep holds
//! a client's template for `persistence_s` past the expiry of each live flow it visits on the
//! template's server (`hold`): an FTP session idle on its control connection longer than
//! `persistence_s` still gets its next passive connection on its server.

use alloc::vec::Vec;
use core::net::Ipv4Addr;

use crate::flow::map::{FixedMap, MapKey};
use crate::model::{Protocol, ServiceSpec};
use crate::time::Millis;

/// Templates a box holds.
pub const CAPACITY: usize = 65536;
/// Stripes (each its own lock and map of `CAPACITY / STRIPES`).
const STRIPES: usize = 16;

/// What a template is shared by: one service, or every service of a group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Scope(u64);

impl Scope {
    /// The scope of `service`: its group's when it has one, else its own.
    pub fn of(service: &ServiceSpec) -> Scope {
        match &service.persistence_group {
            Some(g) => Scope::group(g),
            None => Scope::service(service.vip, service.proto, service.port),
        }
    }

    /// A service's own (no two services of a valid config share a VIP, protocol and first port).
    pub fn service(vip: Ipv4Addr, proto: Protocol, first_port: u16) -> Scope {
        Scope(u64::from(u32::from(vip)) << 32 | u64::from(first_port) << 16 | u64::from(proto.number()) << 8)
    }

    /// A group's: its name hashed (FNV-1a) into the upper 56 bits, tagged 0xff in the low byte,
    /// which no service's scope has (the protocol's byte is above it).
    pub fn group(name: &str) -> Scope {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in name.as_bytes() {
            h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
        Scope(h << 8 | 0xff)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
struct Key {
    scope: Scope,
    client: Ipv4Addr,
}

impl MapKey for Key {
    fn words(&self) -> [u64; 2] {
        [u64::from(u32::from(self.client)), self.scope.0]
    }
}

/// A client's real server within a scope.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Template {
    /// The real server.
    pub rip: Ipv4Addr,
    /// When it goes, unless a new connection of the client renews it.
    pub expires: Millis,
}

/// A template as the connection list shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TemplateEntry {
    /// Whose.
    pub scope: Scope,
    /// The client.
    pub client: Ipv4Addr,
    /// Its server and expiry.
    pub template: Template,
}

/// The box's templates.
#[derive(Debug)]
pub struct Templates {
    stripes: Vec<spin::Mutex<FixedMap<Key, Template>>>,
}

impl Templates {
    /// An empty table of `CAPACITY` templates (allocated now).
    pub fn new(seed: u64) -> Templates {
        let empty = Key { scope: Scope(u64::MAX), client: Ipv4Addr::UNSPECIFIED };
        let nothing = Template { rip: Ipv4Addr::UNSPECIFIED, expires: Millis(0) };
        let stripes =
            (0..STRIPES).map(|i| spin::Mutex::new(FixedMap::new(CAPACITY / STRIPES, seed ^ (i as u64), empty, nothing))).collect();
        Templates { stripes }
    }

    fn stripe(&self, client: Ipv4Addr) -> &spin::Mutex<FixedMap<Key, Template>> {
        let i = (u32::from(client).wrapping_mul(0x9e37_79b1) >> 28) as usize % STRIPES;
        &self.stripes[i]
    }

    /// The client's live template in `scope`, if it has one.
    pub fn get(&self, scope: Scope, client: Ipv4Addr, now: Millis) -> Option<Template> {
        let t = self.stripe(client).lock().get(&Key { scope, client }).copied()?;
        (t.expires > now).then_some(t)
    }

    /// Keep `client` on `rip` in `scope` until `expires`; false if its stripe is full (the
    /// connection is still served, without affinity).
    pub fn put(&self, scope: Scope, client: Ipv4Addr, rip: Ipv4Addr, expires: Millis) -> bool {
        self.stripe(client).lock().insert(Key { scope, client }, Template { rip, expires })
    }

    /// Hold `client`'s template in `scope` on `rip` until at least `until` (a live flow of
    /// that client on that server ends no earlier than `until` less the persistence). One that
    /// is gone is put back; one on another server is left as it is.
    pub fn hold(&self, scope: Scope, client: Ipv4Addr, rip: Ipv4Addr, until: Millis) {
        let mut map = self.stripe(client).lock();
        let key = Key { scope, client };
        match map.get_mut(&key) {
            Some(t) if t.rip == rip => t.expires = t.expires.max(until),
            Some(_) => {}
            None => {
                let _ = map.insert(key, Template { rip, expires: until });
            }
        }
    }

    /// Remove expired templates from one stripe, `budget` slots at a time; `cursor` carries on
    /// where the last call stopped.
    pub fn sweep(&self, cursor: &mut usize, budget: usize, now: Millis) -> usize {
        let stripe = (*cursor / (1 << 24)) % STRIPES;
        let mut at = *cursor % (1 << 24);
        let removed = self.stripes[stripe].lock().sweep(&mut at, budget, |_, t| t.expires <= now, |_, _| {});
        // The stripe's map wraps its cursor to 0 after its last slot: move to the next stripe.
        let next = if at < *cursor % (1 << 24) || at == 0 { (stripe + 1) % STRIPES } else { stripe };
        *cursor = next * (1 << 24) + if next == stripe { at } else { 0 };
        removed
    }

    /// Visit every live template, in no order (the connection list; one stripe locked at a
    /// time).
    pub fn for_each(&self, now: Millis, mut f: impl FnMut(TemplateEntry)) {
        for s in &self.stripes {
            let map = s.lock();
            for (k, t) in map.iter().filter(|(_, t)| t.expires > now) {
                f(TemplateEntry { scope: k.scope, client: k.client, template: *t });
            }
        }
    }

    /// Live templates.
    pub fn len(&self) -> usize {
        self.stripes.iter().map(|s| s.lock().len()).sum()
    }

    /// None at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 7);
    const RS: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 11);

    #[test]
    fn a_template_is_shared_by_its_scope_only_and_expires() {
        let t = Templates::new(1);
        let ftp = Scope::group("ftp");
        let web = Scope::service(Ipv4Addr::new(203, 0, 113, 10), Protocol::Tcp, 80);
        assert_ne!(ftp, web);
        assert_ne!(Scope::group("ftp"), Scope::group("ftq"));
        assert!(t.put(ftp, A, RS, Millis(1000)));
        assert_eq!(t.get(ftp, A, Millis(999)).map(|t| t.rip), Some(RS));
        assert_eq!(t.get(web, A, Millis(0)), None);
        assert_eq!(t.get(ftp, Ipv4Addr::new(192, 0, 2, 8), Millis(0)), None);
        assert_eq!(t.get(ftp, A, Millis(1000)), None, "expired at its time");
    }

    #[test]
    fn the_sweep_visits_every_stripe_and_removes_only_the_expired() {
        let t = Templates::new(2);
        let g = Scope::group("g");
        for i in 0..200u32 {
            let expires = if i % 2 == 0 { Millis(10) } else { Millis(1000) };
            assert!(t.put(g, Ipv4Addr::from(0xc000_0200 + i), RS, expires));
        }
        let mut cursor = 0;
        let mut removed = 0;
        for _ in 0..STRIPES * 8 {
            removed += t.sweep(&mut cursor, 1024, Millis(500));
        }
        assert_eq!(removed, 100);
        assert_eq!(t.len(), 100);
        let mut live = 0;
        t.for_each(Millis(500), |e| live += usize::from(e.template.expires == Millis(1000)));
        assert_eq!(live, 100);
    }
}
