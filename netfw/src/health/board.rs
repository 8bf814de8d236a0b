//! The health board: each backend's up/down verdict, written by the prober (in the first
//! worker) and read by every worker once per turn when its version moves (never per packet);
//! and the other way, backends a worker suspects (a client sent its SYN twice), which the
//! prober probes at once.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use netfw_core::forward::Forwarder;

/// Up/down per backend index of one installed config.
#[derive(Debug)]
pub struct HealthBoard {
    up: Vec<AtomicBool>,
    suspect: Vec<AtomicBool>,
    version: AtomicU64,
}

impl HealthBoard {
    /// `backends` backends, all up.
    pub fn new(backends: usize) -> Self {
        HealthBoard {
            up: (0..backends).map(|_| AtomicBool::new(true)).collect(),
            suspect: (0..backends).map(|_| AtomicBool::new(false)).collect(),
            version: AtomicU64::new(1),
        }
    }

    /// Set one backend's verdict.
    pub fn set(&self, backend: u16, up: bool) {
        if let Some(a) = self.up.get(usize::from(backend)) {
            if a.swap(up, Ordering::Relaxed) != up {
                self.version.fetch_add(1, Ordering::Release);
            }
        }
    }

    /// A worker's forwarder suspects this backend (`Forwarder::take_suspects`).
    pub fn suspect(&self, backend: u16) {
        if let Some(a) = self.suspect.get(usize::from(backend)) {
            a.store(true, Ordering::Relaxed);
        }
    }

    /// Was this backend suspected since the last call?
    pub fn take_suspect(&self, backend: u16) -> bool {
        self.suspect.get(usize::from(backend)).is_some_and(|a| a.load(Ordering::Relaxed) && a.swap(false, Ordering::Relaxed))
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
