//! The health board: each backend's up/down verdict, written by the prober (in the first
//! worker) and read by every worker once per turn when its version moves (never per packet).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use netfw_core::forward::Forwarder;

/// Up/down per backend index of one installed config.
#[derive(Debug)]
pub struct HealthBoard {
    up: Vec<AtomicBool>,
    version: AtomicU64,
}

impl HealthBoard {
    /// `backends` backends, all up.
    pub fn new(backends: usize) -> Self {
        HealthBoard { up: (0..backends).map(|_| AtomicBool::new(true)).collect(), version: AtomicU64::new(1) }
    }

    /// Set one backend's verdict.
    pub fn set(&self, backend: u16, up: bool) {
        if let Some(a) = self.up.get(usize::from(backend)) {
            if a.swap(up, Ordering::Relaxed) != up {
                self.version.fetch_add(1, Ordering::Release);
            }
        }
    }

    /// Changes with every verdict that changed.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// Bring `fwd`'s backends in line with the board (`seen`: the version it last copied).
    pub fn sync(&self, fwd: &mut Forwarder, seen: &mut u64) {
        let v = self.version();
        if v == *seen {
            return;
        }
        *seen = v;
        for (i, a) in self.up.iter().enumerate() {
            let _ = fwd.set_health(u16::try_from(i).unwrap_or(u16::MAX), a.load(Ordering::Relaxed));
        }
    }
}
