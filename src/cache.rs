//! A bounded cache with expiry, evicting the least recently used entry when
//! full: answers keyed by what clients send (tokens, addresses) must not
//! grow with them.

use std::borrow::Borrow;
use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::time::Instant;

#[derive(Debug)]
pub struct Lru<K, V> {
    capacity: usize,
    /// key -> (value, expiry, last use).
    entries: HashMap<K, (V, Instant, u64)>,
    /// last use -> key, oldest first.
    order: BTreeMap<u64, K>,
    clock: u64,
}

impl<K: Hash + Eq + Clone, V: Clone> Lru<K, V> {
    pub fn new(capacity: usize) -> Lru<K, V> {
        assert!(capacity > 0);
        Lru {
            capacity,
            entries: HashMap::new(),
            order: BTreeMap::new(),
            clock: 0,
        }
    }

    /// The value, if present and not expired at `now` (an expired one is
    /// removed).
    /// Takes any borrowed form of the key (`&str` for `String` keys), so a
    /// lookup allocates nothing.
    pub fn get<Q>(&mut self, key: &Q, now: Instant) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let (value, expiry, used) = self.entries.get_mut(key)?;
        if *expiry <= now {
            let used = *used;
            self.entries.remove(key);
            self.order.remove(&used);
            return None;
        }
        self.clock += 1;
        // The key moves to its new place in the order; nothing is cloned.
        let owned = self
            .order
            .remove(used)
            .expect("every entry is in the order");
        *used = self.clock;
        self.order.insert(self.clock, owned);
        Some(value.clone())
    }

    pub fn remove(&mut self, key: &K) {
        if let Some((_, _, used)) = self.entries.remove(key) {
            self.order.remove(&used);
        }
    }

    /// Inserts (or replaces) `key`, evicting the least recently used entry
    /// if full.
    pub fn insert(&mut self, key: K, value: V, expiry: Instant) {
        self.clock += 1;
        if let Some((_, _, used)) = self.entries.get(&key) {
            self.order.remove(used);
        } else if self.entries.len() >= self.capacity
            && let Some((_, oldest)) = self.order.pop_first()
        {
            self.entries.remove(&oldest);
        }
        self.order.insert(self.clock, key.clone());
        self.entries.insert(key, (value, expiry, self.clock));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bounded_expiring_least_recently_used_first_out() {
        let t0 = Instant::now();
        let later = t0 + Duration::from_secs(60);
        let mut c = Lru::new(2);
        c.insert("a", 1, later);
        c.insert("b", 2, later);
        assert_eq!(c.get(&"a", t0), Some(1)); // a is now the most recent
        c.insert("c", 3, later); // evicts b
        assert_eq!(c.get(&"b", t0), None);
        assert_eq!(c.get(&"a", t0), Some(1));
        assert_eq!(c.get(&"c", t0), Some(3));
        assert_eq!(c.entries.len(), 2);
        // Expired entries are gone.
        assert_eq!(c.get(&"a", later), None);
        assert_eq!(c.entries.len(), 1);
        // Replacing keeps one entry.
        c.insert("c", 4, later);
        assert_eq!(c.get(&"c", t0), Some(4));
        assert_eq!(c.entries.len(), 1);
        for i in 0..1000 {
            c.insert(if i % 2 == 0 { "x" } else { "y" }, i, later);
        }
        assert_eq!(c.entries.len(), 2);
        assert_eq!(c.order.len(), 2);
    }
}
