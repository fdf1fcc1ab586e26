//! Ordered maps keyed by an address (or a handle's number), for the range
//! look-ups of the registry, the aliases, the in-process keys and the handle
//! table.
//!
//! Every `BTreeMap<usize, V>` is compiled once per `V`, about 5 KB of code each
//! in an app. Here one tree, `BTreeMap<usize, usize>`, maps each key to the
//! position of its value in a vector, whatever the value's type: the four maps
//! share one copy of the tree's code (docs/BENCHMARKS.md#footprint). Look-ups
//! and updates stay O(log n); a removal moves the last value into the hole.

use std::collections::BTreeMap;
use std::ops::Bound;

pub struct AddrMap<V> {
    /// Key -> position of its `(key, value)` in `slots`.
    index: BTreeMap<usize, usize>,
    /// In no particular order; `index` orders them.
    slots: Vec<(usize, V)>,
}

impl<V> Default for AddrMap<V> {
    fn default() -> Self {
        AddrMap::new()
    }
}

impl<V> AddrMap<V> {
    pub const fn new() -> Self {
        AddrMap { index: BTreeMap::new(), slots: Vec::new() }
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    pub fn get(&self, key: usize) -> Option<&V> {
        let &i = self.index.get(&key)?;
        Some(&self.slots[i].1)
    }

    pub fn get_mut(&mut self, key: usize) -> Option<&mut V> {
        let &i = self.index.get(&key)?;
        Some(&mut self.slots[i].1)
    }

    /// Inserts or replaces; returns the value replaced.
    pub fn insert(&mut self, key: usize, value: V) -> Option<V> {
        match self.index.get(&key) {
            Some(&i) => Some(std::mem::replace(&mut self.slots[i].1, value)),
            None => {
                self.index.insert(key, self.slots.len());
                self.slots.push((key, value));
                None
            }
        }
    }

    /// The value under `key`, inserted with `V::default()` when missing.
    pub fn get_or_default(&mut self, key: usize) -> &mut V
    where
        V: Default,
    {
        let i = match self.index.get(&key) {
            Some(&i) => i,
            None => {
                self.index.insert(key, self.slots.len());
                self.slots.push((key, V::default()));
                self.slots.len() - 1
            }
        };
        &mut self.slots[i].1
    }

    pub fn remove(&mut self, key: usize) -> Option<V> {
        let i = self.index.remove(&key)?;
        let (_, value) = self.slots.swap_remove(i);
        // The last value moved into the hole: point its key there.
        if let Some(&(moved, _)) = self.slots.get(i) {
            self.index.insert(moved, i);
        }
        Some(value)
    }

    pub fn clear(&mut self) {
        self.index.clear();
        self.slots.clear();
    }

    /// Keeps the entries for which `keep` says so.
    pub fn retain(&mut self, mut keep: impl FnMut(usize, &V) -> bool) {
        let mut i = 0;
        while i < self.slots.len() {
            let (key, ref value) = self.slots[i];
            if keep(key, value) {
                i += 1;
            } else {
                // The last entry moves to `i`: look at it next.
                self.remove(key);
            }
        }
    }

    /// Entries with `start <= key < end`, in key order.
    pub fn range(&self, start: Bound<usize>, end: Bound<usize>) -> impl DoubleEndedIterator<Item = (usize, &V)> + '_ {
        self.index.range((start, end)).map(|(&k, &i)| (k, &self.slots[i].1))
    }

    /// Keys in `[start, end)`, in order.
    pub fn keys_between(&self, start: usize, end: usize) -> Vec<usize> {
        self.range(Bound::Included(start), Bound::Excluded(end)).map(|(k, _)| k).collect()
    }

    /// The entry with the greatest key at most `key`.
    pub fn at_or_below(&self, key: usize) -> Option<(usize, &V)> {
        self.range(Bound::Unbounded, Bound::Included(key)).next_back()
    }

    /// Every entry, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (usize, &V)> + '_ {
        self.range(Bound::Unbounded, Bound::Unbounded)
    }
}

#[cfg(test)]
mod tests {
    use super::AddrMap;
    use std::collections::BTreeMap;
    use std::ops::Bound;

    /// Random operations on an `AddrMap` and a `BTreeMap` give the same answers.
    #[test]
    fn behaves_as_a_btreemap() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let (mut ours, mut theirs) = (AddrMap::new(), BTreeMap::new());
        for step in 0..20_000u64 {
            let key = (next() % 64) as usize;
            match next() % 7 {
                0 | 1 => assert_eq!(ours.insert(key, step), theirs.insert(key, step)),
                2 => assert_eq!(ours.remove(key), theirs.remove(&key)),
                3 => {
                    *ours.get_or_default(key) += 1;
                    *theirs.entry(key).or_default() += 1;
                }
                4 => {
                    let cut = next() % 3;
                    ours.retain(|_, v| v % 3 != cut);
                    theirs.retain(|_, v| *v % 3 != cut);
                }
                5 => {
                    let (a, b) = (key, (next() % 64) as usize);
                    let want: Vec<usize> = theirs.range(a..b.max(a)).map(|(&k, _)| k).collect();
                    assert_eq!(ours.keys_between(a, b.max(a)), want);
                    assert_eq!(ours.at_or_below(key).map(|(k, &v)| (k, v)), theirs.range(..=key).next_back().map(|(&k, &v)| (k, v)));
                    let below: Vec<(usize, u64)> = ours.range(Bound::Unbounded, Bound::Excluded(key)).map(|(k, &v)| (k, v)).collect();
                    assert_eq!(below, theirs.range(..key).map(|(&k, &v)| (k, v)).collect::<Vec<_>>());
                }
                _ => {
                    if step % 1000 == 0 {
                        ours.clear();
                        theirs.clear();
                    }
                }
            }
            assert_eq!(ours.len(), theirs.len());
            assert_eq!(ours.get(key), theirs.get(&key));
            if step % 97 == 0 {
                let all: Vec<(usize, u64)> = ours.iter().map(|(k, &v)| (k, v)).collect();
                assert_eq!(all, theirs.iter().map(|(&k, &v)| (k, v)).collect::<Vec<_>>());
            }
        }
    }
}
