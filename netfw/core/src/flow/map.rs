//! A fixed-capacity hash map with linear probing and backward-shift deletion.
//!
//! Allocated once at construction (a power-of-two slot count, at most half full at capacity),
//! never grows, never allocates afterwards. Hashing is keyed with a per-instance seed so an
//! attacker cannot aim flows at one probe chain. A free slot holds the map's empty key (given
//! at construction, never stored), so a slot is just its key and value: the flow table's is
//! 24 bytes.

use alloc::vec;
use alloc::vec::Vec;

/// A key usable in `FixedMap`.
pub trait MapKey: Copy + Eq {
    /// 64 bits of key material to hash (keys up to 16 bytes fold into two words).
    fn words(&self) -> [u64; 2];
}

#[derive(Clone, Copy)]
struct Slot<K, V> {
    /// The map's empty key when the slot is free.
    key: K,
    val: V,
}

/// Fixed-capacity open-addressing map.
pub struct FixedMap<K, V> {
    slots: Vec<Slot<K, V>>,
    mask: usize,
    len: usize,
    capacity: usize,
    seed: u64,
    /// The key of a free slot (never stored).
    empty: K,
}

impl<K, V> core::fmt::Debug for FixedMap<K, V> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("FixedMap").field("len", &self.len).field("capacity", &self.capacity).finish()
    }
}

/// Memory for a map could not be had.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AllocError {
    /// How much was asked for.
    pub bytes: usize,
}

impl<K: MapKey, V: Copy> FixedMap<K, V> {
    /// Slots a map of `capacity` entries has: twice the capacity, rounded to a power of two.
    pub fn slots_for(capacity: usize) -> Option<usize> {
        capacity.max(1).checked_mul(2)?.checked_next_power_of_two()
    }

    /// Bytes a map of `capacity` entries holds.
    pub fn bytes_for(capacity: usize) -> usize {
        Self::slots_for(capacity).and_then(|n| n.checked_mul(Self::slot_bytes())).unwrap_or(usize::MAX)
    }

    /// A map holding up to `capacity` entries; `empty_key` marks free slots and can never be
    /// stored (choose one no real entry has). Aborts if the memory cannot be had: use
    /// `try_new` where the capacity comes from a config.
    pub fn new(capacity: usize, seed: u64, empty_key: K, empty_val: V) -> Self {
        let capacity = capacity.max(1);
        let slots = (capacity * 2).next_power_of_two();
        FixedMap { slots: vec![Slot { key: empty_key, val: empty_val }; slots], mask: slots - 1, len: 0, capacity, seed, empty: empty_key }
    }

    /// A map holding up to `capacity` entries, or an error if its memory cannot be had. Every
    /// slot is written now, so the memory is really there before the map is used.
    pub fn try_new(capacity: usize, seed: u64, empty_key: K, empty_val: V) -> Result<Self, AllocError> {
        let capacity = capacity.max(1);
        let bytes = Self::bytes_for(capacity);
        let slots = Self::slots_for(capacity).ok_or(AllocError { bytes })?;
        let mut v = Vec::new();
        v.try_reserve_exact(slots).map_err(|_| AllocError { bytes })?;
        v.resize(slots, Slot { key: empty_key, val: empty_val });
        Ok(FixedMap { slots: v, mask: slots - 1, len: 0, capacity, seed, empty: empty_key })
    }

    /// Entries stored.
    pub fn len(&self) -> usize {
        self.len
    }
    /// True when nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Maximum entries.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
    /// True when no further entry fits.
    pub fn is_full(&self) -> bool {
        self.len >= self.capacity
    }
    /// Bytes of memory per slot (for the bytes-per-flow figure).
    pub fn slot_bytes() -> usize {
        core::mem::size_of::<Slot<K, V>>()
    }
    /// Number of slots (twice the capacity, rounded to a power of two).
    pub fn slot_count(&self) -> usize {
        self.slots.len()
    }

    #[inline]
    fn home(&self, key: &K) -> usize {
        let [a, b] = key.words();
        // Two multiplications keyed by the seed, the high half folded down: a few
        // instructions, and no attacker who does not know the seed can aim at one chain.
        let h = (a ^ self.seed).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (b ^ self.seed.rotate_left(32)).wrapping_mul(0xc2b2_ae3d_27d4_eb4f);
        let h = h ^ (h >> 29) ^ (h >> 47);
        #[allow(clippy::cast_possible_truncation, reason = "only the low bits are wanted: the mask keeps them")]
        let low = h as usize;
        low & self.mask
    }

    /// The slot of `key`, which must not be the empty key (it would find a free slot): the
    /// flow table's keys never are (no `FlowKey` is its `EMPTY_KEY`), and `get`, `get_mut`
    /// and `remove` refuse it. The key is compared first, as a hit is the common case.
    #[inline]
    pub(crate) fn find(&self, key: &K) -> Option<usize> {
        let mut i = self.home(key);
        loop {
            let s = &self.slots[i];
            if s.key == *key {
                return Some(i);
            }
            if s.key == self.empty {
                return None;
            }
            i = (i + 1) & self.mask;
        }
    }

    /// `find`, for any key.
    fn find_any(&self, key: &K) -> Option<usize> {
        if *key == self.empty {
            return None;
        }
        self.find(key)
    }

    /// Does slot `i` hold an entry?
    fn used(&self, i: usize) -> bool {
        self.slots[i].key != self.empty
    }

    /// Look a key up.
    pub fn get(&self, key: &K) -> Option<&V> {
        self.find_any(key).map(|i| &self.slots[i].val)
    }

    /// Look a key up for update.
    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        self.find_any(key).map(move |i| &mut self.slots[i].val)
    }

    /// Insert or replace. Returns `false` (and stores nothing) when full and the key is new,
    /// or when the key is the map's empty key.
    pub fn insert(&mut self, key: K, val: V) -> bool {
        if key == self.empty {
            return false;
        }
        let mut i = self.home(&key);
        let empty = self.empty;
        loop {
            let s = &mut self.slots[i];
            if s.key == empty {
                if self.len >= self.capacity {
                    return false;
                }
                *s = Slot { key, val };
                self.len += 1;
                return true;
            }
            if s.key == key {
                s.val = val;
                return true;
            }
            i = (i + 1) & self.mask;
        }
    }

    /// The value in slot `i` (which `find` gave).
    pub(crate) fn val_mut(&mut self, i: usize) -> &mut V {
        &mut self.slots[i].val
    }

    /// Remove the entry in slot `i` (which `find` gave), returning its value.
    pub(crate) fn remove_index(&mut self, i: usize) -> V {
        self.remove_at(i).1
    }

    /// Remove a key, returning its value.
    pub fn remove(&mut self, key: &K) -> Option<V> {
        let i = self.find_any(key)?;
        Some(self.remove_at(i).1)
    }

    /// Remove the entry in slot `i` (which must be used) with backward-shift deletion, so no
    /// tombstones ever accumulate.
    fn remove_at(&mut self, mut i: usize) -> (K, V) {
        let removed = (self.slots[i].key, self.slots[i].val);
        self.slots[i].key = self.empty;
        self.len -= 1;
        let mut j = i;
        loop {
            j = (j + 1) & self.mask;
            if !self.used(j) {
                break;
            }
            let home = self.home(&self.slots[j].key);
            // Can the entry at j move back to i? Only if its home is not cyclically in (i, j].
            let in_range = if i <= j { i < home && home <= j } else { i < home || home <= j };
            if !in_range {
                self.slots[i] = self.slots[j];
                self.slots[j].key = self.empty;
                i = j;
            }
        }
        removed
    }

    /// Visit up to `budget` slots starting at `*cursor`, removing entries for which `expired`
    /// says so (it may update the ones it keeps); `on_remove` sees each removed entry. Advances the cursor; returns removals.
    pub fn sweep(
        &mut self,
        cursor: &mut usize,
        budget: usize,
        mut expired: impl FnMut(&K, &mut V) -> bool,
        mut on_remove: impl FnMut(&K, &V),
    ) -> usize {
        let mut removed = 0;
        let mut visited = 0;
        let mut i = *cursor & self.mask;
        while visited < budget.min(self.slots.len()) {
            let empty = self.empty;
            let s = &mut self.slots[i];
            if s.key != empty && expired(&s.key, &mut s.val) {
                let (k, v) = self.remove_at(i);
                on_remove(&k, &v);
                removed += 1;
                // Backward shift may have moved another entry into slot i: look at it again
                // (bounded: each removal shrinks the map).
            } else {
                i = (i + 1) & self.mask;
                visited += 1;
            }
        }
        *cursor = i;
        removed
    }

    /// Visit the entries of up to `budget` slots from slot `from` (read only); the slot to go
    /// on from, or `None` when the last slot was visited.
    pub fn walk(&self, from: usize, budget: usize, mut f: impl FnMut(&K, &V)) -> Option<usize> {
        let end = from.saturating_add(budget).min(self.slots.len());
        for s in self.slots.get(from..end).unwrap_or_default() {
            if s.key != self.empty {
                f(&s.key, &s.val);
            }
        }
        (end < self.slots.len()).then_some(end)
    }

    /// Among the `window` slots from the key's home, the first for which `evictable` holds;
    /// removes it and returns it.
    pub fn evict_near(&mut self, key: &K, window: usize, mut evictable: impl FnMut(&K, &V) -> bool) -> Option<(K, V)> {
        let mut i = self.home(key);
        for _ in 0..window {
            let s = &self.slots[i];
            if self.used(i) && evictable(&s.key, &s.val) {
                return Some(self.remove_at(i));
            }
            i = (i + 1) & self.mask;
        }
        None
    }

    /// Rewrite or drop every entry (used on config reload, never per packet).
    pub fn retain_map(&mut self, mut f: impl FnMut(&K, &mut V) -> bool) {
        let mut i = 0;
        while i < self.slots.len() {
            if self.used(i) {
                let key = self.slots[i].key;
                if !f(&key, &mut self.slots[i].val) {
                    self.remove_at(i);
                    continue;
                }
            }
            i += 1;
        }
    }

    /// Iterate over entries (status, tests).
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.slots.iter().filter(|s| s.key != self.empty).map(|s| (&s.key, &s.val))
    }
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation, reason = "test values are small")]
mod tests {
    use super::*;

    #[derive(Clone, Copy, PartialEq, Eq, Debug)]
    struct K(u64);
    impl MapKey for K {
        fn words(&self) -> [u64; 2] {
            [self.0, 0]
        }
    }

    #[test]
    fn insert_get_remove_and_refuse_when_full() {
        let mut m = FixedMap::new(100, 7, K(0), 0u32);
        for i in 1..=100 {
            assert!(m.insert(K(i), i as u32));
        }
        assert!(m.is_full());
        assert!(!m.insert(K(1000), 1), "a full map refuses a new key");
        assert!(!m.insert(K(0), 1), "the empty key is never stored");
        assert_eq!(m.get(&K(0)), None);
        assert!(m.insert(K(5), 55), "but replaces an existing one");
        assert_eq!(m.get(&K(5)), Some(&55));
        for i in (1..=100).step_by(2) {
            assert_eq!(m.remove(&K(i)), Some(if i == 5 { 55 } else { i as u32 }));
        }
        for i in 1..=100u64 {
            assert_eq!(m.get(&K(i)).is_some(), i % 2 == 0, "key {i}");
        }
        assert_eq!(m.len(), 50);
    }

    #[test]
    fn sweep_removes_only_expired_and_keeps_the_rest_reachable() {
        let mut m = FixedMap::new(1000, 3, K(0), 0u32);
        for i in 1..=1000 {
            m.insert(K(i), i as u32);
        }
        let mut cursor = 0;
        let mut seen = 0;
        let slots = m.slot_count();
        m.sweep(&mut cursor, slots, |_, v| *v % 3 == 0, |_, _| seen += 1);
        assert_eq!(seen, 333);
        for i in 1..=1000u64 {
            assert_eq!(m.get(&K(i)).is_some(), i % 3 != 0, "key {i}");
        }
    }
}
