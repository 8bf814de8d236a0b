//! Connection slots for one listener: at most `total` connections at once, and at most
//! `per_client` from any one address, so one machine on the management network (or a few
//! trickling clients) cannot take every slot. A slot is held by a `Slot` and freed when it
//! is dropped.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// The slots of one listener.
#[derive(Debug)]
pub struct Slots {
    total: usize,
    per_client: usize,
    held: Mutex<Held>,
}

#[derive(Debug, Default)]
struct Held {
    all: usize,
    by_client: HashMap<IpAddr, usize>,
}

/// Why a connection got no slot.
#[derive(Debug, PartialEq, Eq)]
pub enum Full {
    /// Every slot of the listener is taken.
    Listener,
    /// This address already holds its share.
    Client,
}

/// One taken slot; dropping it frees it.
#[derive(Debug)]
pub struct Slot {
    slots: Arc<Slots>,
    client: IpAddr,
}

impl Slots {
    /// `total` slots, `per_client` of them at most for one address.
    pub fn new(total: usize, per_client: usize) -> Arc<Slots> {
        Arc::new(Slots { total, per_client, held: Mutex::default() })
    }

    fn held(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A slot for a connection from `client`, if one is free.
    pub fn take(self: &Arc<Slots>, client: IpAddr) -> Result<Slot, Full> {
        let mut h = self.held();
        if h.all >= self.total {
            return Err(Full::Listener);
        }
        let mine = h.by_client.entry(client).or_insert(0);
        if *mine >= self.per_client {
            return Err(Full::Client);
        }
        *mine += 1;
        h.all += 1;
        Ok(Slot { slots: self.clone(), client })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut h = self.slots.held();
        h.all = h.all.saturating_sub(1);
        if let Some(n) = h.by_client.get_mut(&self.client) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                h.by_client.remove(&self.client);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_address_gets_its_share_and_no_more_and_slots_come_back() {
        let s = Slots::new(4, 2);
        let a: IpAddr = "198.19.0.1".parse().unwrap();
        let b: IpAddr = "198.19.0.2".parse().unwrap();
        let c: IpAddr = "198.19.0.3".parse().unwrap();
        let a1 = s.take(a).unwrap();
        let _a2 = s.take(a).unwrap();
        assert_eq!(s.take(a).unwrap_err(), Full::Client);
        let _b1 = s.take(b).unwrap();
        let _b2 = s.take(b).unwrap();
        assert_eq!(s.take(c).unwrap_err(), Full::Listener);
        drop(a1);
        let c1 = s.take(c).expect("a freed slot is free again");
        drop(c1);
        assert!(!s.held().by_client.contains_key(&c), "and the map forgets an address that holds none");
    }
}
