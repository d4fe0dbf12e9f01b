//! A bounded, sharded LRU cache keyed by image offset, shared by the reader's
//! threads. Each shard is a mutex around a map and a recency index; callers
//! hold a lock only to look up or insert, never while decompressing, so two
//! threads may occasionally decompress the same block (harmless: same bytes).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, PoisonError};

const SHARDS: usize = 8;

#[derive(Debug)]
struct Shard<V> {
    /// key -> (value, tick of last use)
    map: HashMap<u64, (V, u64)>,
    /// tick of last use -> key; the first entry is the least recently used.
    order: BTreeMap<u64, u64>,
    tick: u64,
}

/// At most `capacity` entries in total (spread over the shards); a capacity
/// of 0 disables caching.
#[derive(Debug)]
pub struct Lru<V> {
    shards: Vec<Mutex<Shard<V>>>,
    per_shard: usize,
}

impl<V: Clone> Lru<V> {
    pub fn new(capacity: usize) -> Self {
        let shards = SHARDS.min(capacity.max(1));
        Self {
            shards: (0..shards)
                .map(|_| {
                    Mutex::new(Shard {
                        map: HashMap::new(),
                        order: BTreeMap::new(),
                        tick: 0,
                    })
                })
                .collect(),
            per_shard: capacity / shards,
        }
    }

    fn shard(&self, key: u64) -> &Mutex<Shard<V>> {
        // Offsets of neighbouring blocks differ in their low bits; mix so
        // consecutive blocks land in different shards.
        let h = key.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32;
        &self.shards[(h as usize) % self.shards.len()]
    }

    pub fn get(&self, key: u64) -> Option<V> {
        if self.per_shard == 0 {
            return None;
        }
        // A panic elsewhere cannot leave a shard inconsistent (every update
        // is a few map operations), so a poisoned lock is still usable.
        let mut shard = self
            .shard(key)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let shard = &mut *shard;
        shard.tick += 1;
        let tick = shard.tick;
        let (value, last) = shard.map.get_mut(&key)?;
        shard.order.remove(last);
        *last = tick;
        shard.order.insert(tick, key);
        Some(value.clone())
    }

    pub fn insert(&self, key: u64, value: V) {
        if self.per_shard == 0 {
            return;
        }
        let mut shard = self
            .shard(key)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let shard = &mut *shard;
        shard.tick += 1;
        let tick = shard.tick;
        if let Some((_, old)) = shard.map.insert(key, (value, tick)) {
            shard.order.remove(&old);
        }
        shard.order.insert(tick, key);
        while shard.map.len() > self.per_shard {
            let Some((_, victim)) = shard.order.pop_first() else {
                break;
            };
            shard.map.remove(&victim);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map(|s| s.map.len()).unwrap_or(0))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stays_bounded_and_keeps_recent_entries() {
        let lru = Lru::new(16);
        for k in 0..1000u64 {
            lru.insert(k, k * 2);
            assert_eq!(lru.get(k), Some(k * 2));
        }
        assert!(lru.len() <= 16, "{}", lru.len());
        assert_eq!(lru.get(0), None);
    }

    #[test]
    fn recently_used_entry_survives_eviction() {
        let lru = Lru::new(1);
        lru.insert(1, "a");
        lru.insert(2, "b");
        assert_eq!(lru.get(1), None);
        assert_eq!(lru.get(2), Some("b"));
    }

    #[test]
    fn zero_capacity_disables() {
        let lru = Lru::new(0);
        lru.insert(1, 1);
        assert_eq!(lru.get(1), None);
    }
}
