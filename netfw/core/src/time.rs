//! Time as the data plane sees it: milliseconds since the forwarder started.
//!
//! The core never reads a clock itself; the caller passes `Millis` in, once per batch. Tests
//! drive the same code with a fake clock.

/// Milliseconds since an arbitrary start (the forwarder's start in production).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Millis(pub u64);

impl Millis {
    /// This instant plus `ms` milliseconds (saturating).
    pub const fn plus(self, ms: u64) -> Millis {
        Millis(self.0.saturating_add(ms))
    }

    /// Milliseconds elapsed from `earlier` to `self` (0 if `earlier` is later).
    pub const fn since(self, earlier: Millis) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}
