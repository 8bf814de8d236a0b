//! Connection counts shared by forwarders that split one box's flows between them (one per
//! group of receive queues, each on its own thread): lc and wlc pick by the box's counts, not
//! by one forwarder's share of them.
//!
//! Each forwarder keeps its own counts (its status) and adds every change to this board too,
//! with one atomic operation per change of a flow's state (new, established, closing, gone),
//! never per packet of a flow that stays as it is. A scheduler reads the board when it picks.
//! Two forwarders that pick at the same moment do not see each other's pick: a server may get
//! up to (forwarders − 1) connections more than one forwarder would have given it.

use alloc::vec::Vec;
use core::sync::atomic::{AtomicU32, Ordering};

/// Active and inactive flows per backend, summed over the forwarders that share it.
#[derive(Debug)]
pub struct SharedLoad {
    /// Two words per backend: active, inactive.
    counts: Vec<AtomicU32>,
}

impl SharedLoad {
    /// A board for `backends` backends (a configuration's), all at zero.
    pub fn new(backends: usize) -> SharedLoad {
        SharedLoad { counts: (0..backends.saturating_mul(2)).map(|_| AtomicU32::new(0)).collect() }
    }

    /// Add `delta` to backend `b`'s active (or inactive) count; a backend it does not have is
    /// ignored.
    pub fn add(&self, b: u16, active: bool, delta: i32) {
        let i = usize::from(b) * 2 + usize::from(!active);
        if let Some(c) = self.counts.get(i) {
            let _ = c.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| Some(v.saturating_add_signed(delta)));
        }
    }

    /// Backend `b`'s (active, inactive) flows over every forwarder.
    pub fn get(&self, b: u16) -> Option<(u32, u32)> {
        let i = usize::from(b) * 2;
        Some((self.counts.get(i)?.load(Ordering::Relaxed), self.counts.get(i + 1)?.load(Ordering::Relaxed)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_add_up_and_never_wrap_below_zero() {
        let s = SharedLoad::new(2);
        s.add(1, true, 3);
        s.add(1, false, 1);
        s.add(1, true, -1);
        assert_eq!(s.get(1), Some((2, 1)));
        s.add(0, false, -1);
        assert_eq!(s.get(0), Some((0, 0)));
        s.add(7, true, 1);
        assert_eq!(s.get(7), None);
    }
}
