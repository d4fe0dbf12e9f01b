//! A bounded, sharded LRU cache keyed by image offset, shared by the reader's
//! threads. Each shard is a mutex around a map and a recency index; callers
//! hold a lock only to look up or insert, never while decompressing.
//! [`Lru::get_or_load`] also makes a second thread that wants a block being
//! decompressed wait for it instead of decompressing it again: with the FUSE
//! server's readahead requests overlapping and the warm-up thread running
//! ahead of the job, duplicates were a large part of a cold start's work.

use crate::sync::{lock, wait};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Condvar, Mutex};

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
    /// Keys being loaded by some thread, for others to wait on.
    loading: Mutex<HashMap<u64, Arc<Pending<V>>>>,
}

/// One load in progress: `None` while loading, then `Some(Some(v))`, or
/// `Some(None)` when the load failed (each waiter then loads itself, to
/// get its own error).
#[derive(Debug)]
struct Pending<V> {
    outcome: Mutex<Option<Option<V>>>,
    done: Condvar,
}

/// Resolves a [`Pending`] even if the loader panics, so no waiter hangs.
struct Resolve<'a, V: Clone> {
    lru: &'a Lru<V>,
    key: u64,
    pending: Arc<Pending<V>>,
    value: Option<V>,
}

impl<V: Clone> Drop for Resolve<'_, V> {
    fn drop(&mut self) {
        lock(&self.lru.loading).remove(&self.key);
        *lock(&self.pending.outcome) = Some(self.value.take());
        self.pending.done.notify_all();
    }
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
            loading: Mutex::new(HashMap::new()),
        }
    }

    /// The cached value of `key`, else the one `load` makes (cached then).
    /// While one thread loads a key, others asking for it wait for its
    /// result rather than load it again.
    pub fn get_or_load<E>(&self, key: u64, load: impl FnOnce() -> Result<V, E>) -> Result<V, E> {
        if let Some(v) = self.get(key) {
            return Ok(v);
        }
        if self.per_shard == 0 {
            return load();
        }
        let (pending, owner) = {
            let mut loading = lock(&self.loading);
            // Again under the lock: a loader inserts into the cache before
            // it leaves `loading`, so a miss here means nobody has it.
            if let Some(v) = self.get(key) {
                return Ok(v);
            }
            match loading.get(&key) {
                Some(p) => (p.clone(), false),
                None => {
                    let p = Arc::new(Pending {
                        outcome: Mutex::new(None),
                        done: Condvar::new(),
                    });
                    loading.insert(key, p.clone());
                    (p, true)
                }
            }
        };
        if !owner {
            let mut outcome = lock(&pending.outcome);
            while outcome.is_none() {
                outcome = wait(&pending.done, outcome);
            }
            if let Some(Some(v)) = &*outcome {
                return Ok(v.clone());
            }
            drop(outcome);
            return load();
        }
        let mut resolve = Resolve {
            lru: self,
            key,
            pending,
            value: None,
        };
        let result = load();
        if let Ok(v) = &result {
            self.insert(key, v.clone());
            resolve.value = Some(v.clone());
        }
        drop(resolve);
        result
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
        let mut shard = lock(self.shard(key));
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
        let mut shard = lock(self.shard(key));
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

    /// Drop every cached value (a warm server gone idle gives its memory
    /// back; loads in progress finish and are cached as usual).
    pub fn clear(&self) {
        for shard in &self.shards {
            let mut shard = lock(shard);
            shard.map = HashMap::new();
            shard.order = BTreeMap::new();
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
    fn clear_drops_everything_and_the_cache_keeps_working() {
        let lru = Lru::new(64);
        for k in 0..64u64 {
            lru.insert(k, k);
        }
        lru.clear();
        assert_eq!(lru.len(), 0);
        assert_eq!(lru.get(3), None);
        assert_eq!(lru.get_or_load(3, || Ok::<_, ()>(9)), Ok(9));
        assert_eq!(lru.get(3), Some(9));
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
    fn concurrent_loads_of_one_key_load_once() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let lru = Arc::new(Lru::new(8));
        let loads = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (lru, loads) = (lru.clone(), loads.clone());
                std::thread::spawn(move || {
                    lru.get_or_load(7, || {
                        loads.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(std::time::Duration::from_millis(50));
                        Ok::<_, ()>(49u64)
                    })
                })
            })
            .collect();
        for t in threads {
            assert_eq!(t.join().expect("join"), Ok(49));
        }
        assert_eq!(loads.load(Ordering::SeqCst), 1);
        assert!(lru.loading.lock().expect("lock").is_empty());
    }

    #[test]
    fn a_failed_load_is_not_cached_and_waiters_load_themselves() {
        let lru: Lru<u64> = Lru::new(8);
        assert_eq!(lru.get_or_load(1, || Err("bad")), Err("bad"));
        assert_eq!(lru.get(1), None);
        assert_eq!(lru.get_or_load(1, || Ok::<_, ()>(2)), Ok(2));
        assert_eq!(lru.get_or_load(1, || Err(())), Ok(2));
        // Caching off: every call loads.
        let off: Lru<u64> = Lru::new(0);
        assert_eq!(off.get_or_load(1, || Ok::<_, ()>(3)), Ok(3));
        assert_eq!(off.get_or_load(1, || Ok::<_, ()>(4)), Ok(4));
    }

    #[test]
    fn zero_capacity_disables() {
        let lru = Lru::new(0);
        lru.insert(1, 1);
        assert_eq!(lru.get(1), None);
    }
}
