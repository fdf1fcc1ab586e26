//! The index: which packed bytes the cache holds, found by look-up key and by content.
//!
//! XNNPACK's key is weak (its seed is a XOR of shapes, so a transposed shape
//! can collide), hence two rules:
//! - a key may name several entries; `look_up` answers only when it names
//!   exactly one, otherwise XNNPACK repacks and `look_up_or_insert` picks the
//!   entry whose bytes match;
//! - entries are also indexed by a hash of their bytes, so identical packed
//!   weights are stored once whatever key they come under.

use std::collections::HashMap;

use crate::abi::Key;

pub type EntryId = u32;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Offset as XNNPACK sees it (arena offset, or a tagged heap offset).
    pub offset: usize,
    pub size: usize,
    /// xxh3 of the packed bytes.
    pub hash: u64,
}

#[derive(Default)]
pub struct Index {
    entries: Vec<Entry>,
    by_key: HashMap<Key, Vec<EntryId>>,
    by_content: HashMap<(u64, usize), Vec<EntryId>>,
}

impl Index {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn get(&self, id: EntryId) -> &Entry {
        &self.entries[id as usize]
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The one entry `key` names, if it names exactly one.
    pub fn look_up(&self, key: &Key) -> Option<EntryId> {
        match self.by_key.get(key).map(Vec::as_slice) {
            Some([only]) => Some(*only),
            _ => None,
        }
    }

    /// The one entry `key` names with exactly `size` bytes.
    pub fn look_up_sized(&self, key: &Key, size: usize) -> Option<EntryId> {
        let ids = self.by_key.get(key)?;
        let mut sized = ids.iter().filter(|&&id| self.get(id).size == size);
        match (sized.next(), sized.next()) {
            (Some(&id), None) => Some(id),
            _ => None,
        }
    }

    /// An entry with these bytes: same hash, same size, and `same_bytes` says equal.
    pub fn find_content(&self, hash: u64, size: usize, mut same_bytes: impl FnMut(&Entry) -> bool) -> Option<EntryId> {
        let ids = self.by_content.get(&(hash, size))?;
        ids.iter().copied().find(|&id| same_bytes(self.get(id)))
    }

    /// Adds an entry reachable from `key`.
    pub fn insert(&mut self, key: Key, entry: Entry) -> EntryId {
        let id = EntryId::try_from(self.entries.len()).expect("fewer than 2^32 entries");
        self.entries.push(entry);
        self.by_content.entry((entry.hash, entry.size)).or_default().push(id);
        self.link(key, id);
        id
    }

    /// Makes `key` reach entry `id` too (when its bytes were already stored).
    pub fn link(&mut self, key: Key, id: EntryId) {
        let ids = self.by_key.entry(key).or_default();
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u32) -> Key {
        Key { seed, kernel: 0x1000, bias: 0, fingerprint: None }
    }

    #[test]
    fn an_ambiguous_key_is_not_answered() {
        let mut ix = Index::default();
        let a = ix.insert(key(1), Entry { offset: 0, size: 64, hash: 1 });
        assert_eq!(ix.look_up(&key(1)), Some(a));
        let b = ix.insert(key(1), Entry { offset: 64, size: 128, hash: 2 });
        assert_eq!(ix.look_up(&key(1)), None);
        assert_eq!(ix.look_up_sized(&key(1), 128), Some(b));
        assert_eq!(ix.look_up(&key(2)), None);
    }

    #[test]
    fn content_is_found_by_hash_size_and_bytes() {
        let mut ix = Index::default();
        let a = ix.insert(key(1), Entry { offset: 0, size: 64, hash: 9 });
        assert_eq!(ix.find_content(9, 64, |_| true), Some(a));
        assert_eq!(ix.find_content(9, 64, |_| false), None);
        assert_eq!(ix.find_content(9, 65, |_| true), None);
        ix.link(key(2), a);
        ix.link(key(2), a);
        assert_eq!(ix.look_up(&key(2)), Some(a));
    }
}
