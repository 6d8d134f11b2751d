//! A bounded stick table: which server a key (a client address, a header value) was last
//! sent to. At most `capacity` entries, the least recently used evicted first; an entry
//! unused for `idle` is forgotten. Time is passed in, so the table is testable with any
//! clock.

use std::hash::Hash;
use std::num::NonZeroUsize;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use lru::LruCache;

pub struct StickTable<K: Hash + Eq> {
    entries: Mutex<LruCache<K, Entry>>,
    idle: Duration,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    server: u32,
    last_used: Instant,
}

impl<K: Hash + Eq> StickTable<K> {
    pub fn new(capacity: NonZeroUsize, idle: Duration) -> Self {
        StickTable {
            entries: Mutex::new(LruCache::new(capacity)),
            idle,
        }
    }

    /// The server `key` sticks to, if its entry is alive; using it renews it.
    pub fn get(&self, key: &K, now: Instant) -> Option<u32> {
        let mut entries = self.lock();
        expire(&mut entries, self.idle, now);
        let entry = entries.get_mut(key)?;
        entry.last_used = now;
        Some(entry.server)
    }

    /// Makes `key` stick to `server` from now on.
    pub fn set(&self, key: K, server: u32, now: Instant) {
        let mut entries = self.lock();
        expire(&mut entries, self.idle, now);
        entries.put(
            key,
            Entry {
                server,
                last_used: now,
            },
        );
    }

    /// Live entries (expired ones are dropped as the table is used).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LruCache<K, Entry>> {
        // A panic elsewhere while holding the lock leaves a valid table.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Entries are in order of last use, so the expired ones are all at the old end.
fn expire<K: Hash + Eq>(entries: &mut LruCache<K, Entry>, idle: Duration, now: Instant) {
    while let Some((_, oldest)) = entries.peek_lru() {
        if now.saturating_duration_since(oldest.last_used) < idle {
            return;
        }
        entries.pop_lru();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn table(capacity: usize, idle_secs: u64) -> StickTable<u64> {
        StickTable::new(
            NonZeroUsize::new(capacity).unwrap(),
            Duration::from_secs(idle_secs),
        )
    }

    #[test]
    fn a_key_sticks_until_it_idles_out() {
        let t = table(10, 60);
        let start = Instant::now();
        t.set(7, 2, start);
        assert_eq!(t.get(&7, start + Duration::from_secs(59)), Some(2));
        // The read renewed it.
        assert_eq!(t.get(&7, start + Duration::from_secs(118)), Some(2));
        assert_eq!(t.get(&7, start + Duration::from_secs(178)), None);
        assert!(t.is_empty());
    }

    #[test]
    fn the_least_recently_used_entry_goes_first() {
        let t = table(2, 60);
        let now = Instant::now();
        t.set(1, 0, now);
        t.set(2, 1, now);
        t.get(&1, now);
        t.set(3, 2, now);
        assert_eq!(t.get(&2, now), None);
        assert_eq!(t.get(&1, now), Some(0));
        assert_eq!(t.get(&3, now), Some(2));
    }

    proptest! {
        #[test]
        fn the_table_never_exceeds_its_capacity(
            keys in proptest::collection::vec(any::<u64>(), 1..2000),
            capacity in 1usize..64,
        ) {
            let t = table(capacity, 3600);
            let now = Instant::now();
            for (i, k) in keys.iter().enumerate() {
                t.set(*k, i as u32, now);
                prop_assert!(t.len() <= capacity);
            }
        }

        #[test]
        fn entries_expire_exactly_after_their_idle_time(
            steps in proptest::collection::vec((0u64..50, 0u64..120), 1..200),
        ) {
            // (key, seconds later): set each key; a key is found only if it was set or
            // read less than 60 s before.
            let t = table(1000, 60);
            let start = Instant::now();
            let mut clock = start;
            let mut last = std::collections::HashMap::new();
            for (key, later) in steps {
                clock += Duration::from_secs(later);
                let expected = last
                    .get(&key)
                    .filter(|at: &&Instant| clock.duration_since(**at) < Duration::from_secs(60))
                    .is_some();
                prop_assert_eq!(t.get(&key, clock).is_some(), expected);
                t.set(key, 0, clock);
                last.insert(key, clock);
            }
        }
    }
}
