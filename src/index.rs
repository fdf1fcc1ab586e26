//! The index: which packed bytes the cache holds, found by look-up key and by content.
//!
//! XNNPACK's key is weak (its seed is a XOR of shapes, so a transposed shape
//! can collide), hence two rules:
//! - a key may name several entries; `look_up` answers only when it names
//!   exactly one, otherwise XNNPACK repacks and `look_up_or_insert` picks the
//!   entry whose bytes match;
//! - entries are also indexed by a sample of their bytes (size and a few
//!   windows, see [`sample_of`]), and a match is confirmed byte by byte, so
//!   identical packed weights are stored once whatever key they come under.
//!   Hashing every packed byte would cost a cold launch ~170 ms per GiB on
//!   the critical path; the full xxh3 the file needs is computed by the
//!   write-back instead.
//!
//! A key is persistent when its pointers lie in registered weights (it then
//! survives a restart and is written to the file's index), or in-process.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};

use crate::abi::Key;
use crate::addrmap::AddrMap;

pub type EntryId = u32;

/// A map of the index's kind: keyed by look-up keys, digests, offsets and ids.
pub type Map<K, V> = HashMap<K, V, KeyHash>;

/// The hasher of the index's maps. Its keys are digests or small integers,
/// so std's SipHash (a sixth of a warm open's time, measured with perf) buys
/// nothing; one folded multiply per word does, seeded per process so that a
/// hostile file cannot choose keys that collide.
#[derive(Clone, Copy, Debug)]
pub struct KeyHash(u64);

impl Default for KeyHash {
    fn default() -> KeyHash {
        static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
        KeyHash(*SEED.get_or_init(|| std::collections::hash_map::RandomState::new().hash_one(0x786e_6e63_6163_6865u64)))
    }
}

impl BuildHasher for KeyHash {
    type Hasher = Folded;
    fn build_hasher(&self) -> Folded {
        Folded(self.0)
    }
}

/// See [`KeyHash`].
pub struct Folded(u64);

impl Folded {
    fn mix(&mut self, word: u64) {
        // The high and low halves of a 64 x 64-bit product, folded: every bit
        // of the word reaches the bits hashbrown uses (the top 7 and the low ones).
        const K: u64 = 0x9e37_79b9_7f4a_7c15;
        let p = u128::from(self.0 ^ word) * u128::from(K);
        self.0 = (p as u64) ^ ((p >> 64) as u64);
    }
}

impl Hasher for Folded {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.mix(u64::from_le_bytes(word));
        }
    }
    fn write_u8(&mut self, n: u8) {
        self.mix(u64::from(n));
    }
    fn write_u32(&mut self, n: u32) {
        self.mix(u64::from(n));
    }
    fn write_u64(&mut self, n: u64) {
        self.mix(n);
    }
    fn write_u128(&mut self, n: u128) {
        self.mix(n as u64);
        self.mix((n >> 64) as u64);
    }
    fn write_usize(&mut self, n: usize) {
        self.mix(n as u64);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

/// How an entry is found: by a key that survives restarts, or by pointers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IndexKey {
    Persistent(u128),
    Process(Key),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Offset as XNNPACK sees it (arena offset, or a tagged heap offset).
    pub offset: usize,
    pub size: usize,
    /// [`sample_of`] its bytes; `None` for an entry loaded from the file until
    /// something needs to find it by content.
    pub sample: Option<u64>,
    /// xxh3 of all its bytes, the file's payload checksum: read from the file,
    /// or computed when the entry is first committed.
    pub checksum: Option<u64>,
    /// In the cache file's newest commit.
    pub committed: bool,
    /// Found, folded into or inserted by a runtime of this session.
    pub used: bool,
}

impl Entry {
    /// A packing of this session, with the sample of its bytes.
    pub fn new(offset: usize, size: usize, sample: u64) -> Entry {
        Entry { offset, size, sample: Some(sample), checksum: None, committed: false, used: true }
    }

    /// A payload of the file's committed index.
    pub fn loaded(offset: usize, size: usize, checksum: u64) -> Entry {
        Entry { offset, size, sample: None, checksum: Some(checksum), committed: true, used: false }
    }
}

/// Bytes read from each window of [`sample_of`], and how many windows.
const WINDOW: usize = 64;
const WINDOWS: usize = 32;

/// A cheap fingerprint of packed bytes: their length and 32 windows of 64
/// bytes spread evenly over them (all of them below 2 KiB). Equal bytes give
/// equal samples; different bytes almost always differ somewhere in a
/// window, and a match is confirmed by comparing every byte anyway.
pub fn sample_of(bytes: &[u8]) -> u64 {
    if bytes.len() <= WINDOW * WINDOWS {
        return xxhash_rust::xxh3::xxh3_64_with_seed(bytes, bytes.len() as u64);
    }
    let mut picked = [0u8; WINDOW * WINDOWS];
    let last = bytes.len() - WINDOW;
    for (i, w) in picked.chunks_exact_mut(WINDOW).enumerate() {
        let at = last * i / (WINDOWS - 1);
        w.copy_from_slice(&bytes[at..at + WINDOW]);
    }
    xxhash_rust::xxh3::xxh3_64_with_seed(&picked, bytes.len() as u64)
}

#[derive(Default)]
pub struct Index {
    entries: Vec<Entry>,
    by_key: Map<IndexKey, Vec<EntryId>>,
    by_content: Map<(u64, usize), Vec<EntryId>>,
    /// Entries loaded from the file whose sample is not taken yet.
    unsampled: Vec<EntryId>,
    by_offset: Map<usize, EntryId>,
    /// In-process keys by each pointer they hold (kernel, and bias when set),
    /// so that keys naming memory that was reused can be dropped.
    process_keys: AddrMap<Vec<Key>>,
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

    pub fn get_mut(&mut self, id: EntryId) -> &mut Entry {
        &mut self.entries[id as usize]
    }

    /// Every (persistent key, entry) pair, for writing the file's index.
    pub fn persistent_links(&self) -> impl Iterator<Item = (u128, EntryId)> + '_ {
        self.by_key.iter().filter_map(|(k, ids)| match k {
            IndexKey::Persistent(p) => Some(ids.iter().map(move |&id| (*p, id))),
            IndexKey::Process(_) => None,
        }).flatten()
    }

    pub fn find_offset(&self, offset: usize) -> Option<EntryId> {
        self.by_offset.get(&offset).copied()
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The one entry `key` names, if it names exactly one.
    pub fn look_up(&self, key: &IndexKey) -> Option<EntryId> {
        match self.by_key.get(key).map(Vec::as_slice) {
            Some([only]) => Some(*only),
            _ => None,
        }
    }

    /// The one entry `key` names with exactly `size` bytes.
    pub fn look_up_sized(&self, key: &IndexKey, size: usize) -> Option<EntryId> {
        let ids = self.by_key.get(key)?;
        let mut sized = ids.iter().filter(|&&id| self.get(id).size == size);
        match (sized.next(), sized.next()) {
            (Some(&id), None) => Some(id),
            _ => None,
        }
    }

    /// An entry with these bytes: same sample, same size, and `same_bytes` says equal.
    pub fn find_content(&self, sample: u64, size: usize, mut same_bytes: impl FnMut(&Entry) -> bool) -> Option<EntryId> {
        let ids = self.by_content.get(&(sample, size))?;
        ids.iter().copied().find(|&id| same_bytes(self.get(id)))
    }

    /// Adds an entry reachable from `key`.
    pub fn insert(&mut self, key: IndexKey, entry: Entry) -> EntryId {
        let id = self.insert_unlinked(entry);
        self.link(key, id);
        id
    }

    /// Adds an entry that no key reaches yet (found by content or offset).
    pub fn insert_unlinked(&mut self, entry: Entry) -> EntryId {
        let id = EntryId::try_from(self.entries.len()).expect("fewer than 2^32 entries");
        self.entries.push(entry);
        self.by_offset.insert(entry.offset, id);
        match entry.sample {
            Some(sample) => self.by_content.entry((sample, entry.size)).or_default().push(id),
            None => self.unsampled.push(id),
        }
        id
    }

    /// The entries whose sample is still to be taken (and forgets them).
    pub fn take_unsampled(&mut self) -> Vec<EntryId> {
        std::mem::take(&mut self.unsampled)
    }

    /// Makes `id` findable by content.
    pub fn set_sample(&mut self, id: EntryId, sample: u64) {
        let e = &mut self.entries[id as usize];
        debug_assert!(e.sample.is_none());
        e.sample = Some(sample);
        self.by_content.entry((sample, e.size)).or_default().push(id);
    }

    /// The entries `key` names.
    pub fn named_by(&self, key: &IndexKey) -> &[EntryId] {
        self.by_key.get(key).map_or(&[], Vec::as_slice)
    }

    /// `key` no longer reaches entry `id` (the entry itself stays).
    pub fn unlink(&mut self, key: &IndexKey, id: EntryId) {
        if let Some(ids) = self.by_key.get_mut(key) {
            ids.retain(|&x| x != id);
        }
    }

    /// Makes `key` reach entry `id` too (when its bytes were already stored).
    /// Returns whether the link is new.
    pub fn link(&mut self, key: IndexKey, id: EntryId) -> bool {
        let ids = self.by_key.entry(key).or_default();
        let new = !ids.contains(&id);
        if new {
            ids.push(id);
            if let IndexKey::Process(k) = key {
                for p in [k.kernel, k.bias].into_iter().filter(|&p| p != 0) {
                    self.process_keys.get_or_default(p).push(k);
                }
            }
        }
        new
    }

    /// Drops every in-process key holding a pointer in `[start, end)`: that
    /// memory now holds other data, so those keys no longer mean what they
    /// named. The entries stay (content and persistent keys still reach
    /// them). Returns how many keys were dropped.
    pub fn forget_pointers(&mut self, start: usize, end: usize) -> usize {
        let pointers = self.process_keys.keys_between(start, end);
        let mut dropped = 0;
        for p in pointers {
            for k in self.process_keys.remove(p).unwrap_or_default() {
                if self.by_key.remove(&IndexKey::Process(k)).is_some() {
                    dropped += 1;
                }
                // The key's other pointer no longer needs to lead to it.
                let other = if k.kernel == p { k.bias } else { k.kernel };
                if let Some(keys) = self.process_keys.get_mut(other) {
                    keys.retain(|x| *x != k);
                    if keys.is_empty() {
                        self.process_keys.remove(other);
                    }
                }
            }
        }
        dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u32) -> IndexKey {
        IndexKey::Process(Key { seed, kernel: 0x1000, bias: 0, fingerprint: None })
    }

    #[test]
    fn the_key_hash_spreads_keys_that_differ_in_any_half() {
        // Keys a hostile or unlucky file could hold: counting up in the low
        // half, or in the high half only. Both the low bits (the bucket) and
        // the top 7 (hashbrown's tag) must take many values.
        let h = KeyHash::default();
        for shift in [0u32, 64] {
            let hashes: Vec<u64> = (0..4096u128).map(|i| h.hash_one(IndexKey::Persistent(i << shift))).collect();
            let distinct: std::collections::HashSet<u64> = hashes.iter().copied().collect();
            assert_eq!(distinct.len(), hashes.len(), "shift {shift}");
            let low: std::collections::HashSet<u64> = hashes.iter().map(|x| x & 1023).collect();
            let tags: std::collections::HashSet<u64> = hashes.iter().map(|x| x >> 57).collect();
            assert!(low.len() > 900 && tags.len() == 128, "shift {shift}: {} low values, {} tags", low.len(), tags.len());
        }
    }

    fn e(offset: usize, size: usize, sample: u64) -> Entry {
        Entry::new(offset, size, sample)
    }

    #[test]
    fn an_ambiguous_key_is_not_answered() {
        let mut ix = Index::default();
        let a = ix.insert(key(1), e(0, 64, 1));
        assert_eq!(ix.look_up(&key(1)), Some(a));
        let b = ix.insert(key(1), e(64, 128, 2));
        assert_eq!(ix.look_up(&key(1)), None);
        assert_eq!(ix.look_up_sized(&key(1), 128), Some(b));
        assert_eq!(ix.look_up(&key(2)), None);
    }

    #[test]
    fn content_is_found_by_hash_size_and_bytes() {
        let mut ix = Index::default();
        let a = ix.insert(key(1), e(0, 64, 9));
        assert_eq!(ix.find_content(9, 64, |_| true), Some(a));
        assert_eq!(ix.find_content(9, 64, |_| false), None);
        assert_eq!(ix.find_content(9, 65, |_| true), None);
        assert!(ix.link(key(2), a));
        assert!(!ix.link(key(2), a));
        ix.link(IndexKey::Persistent(5), a);
        assert_eq!(ix.persistent_links().collect::<Vec<_>>(), vec![(5, a)]);
        assert_eq!(ix.look_up(&key(2)), Some(a));
    }

    #[test]
    fn loaded_entries_are_found_by_content_once_sampled() {
        let mut ix = Index::default();
        let a = ix.insert_unlinked(Entry::loaded(0, 64, 77));
        assert_eq!(ix.find_content(5, 64, |_| true), None);
        assert_eq!(ix.take_unsampled(), vec![a]);
        assert!(ix.take_unsampled().is_empty());
        ix.set_sample(a, 5);
        assert_eq!(ix.find_content(5, 64, |_| true), Some(a));
    }

    #[test]
    fn samples_see_length_and_spread_windows() {
        let a: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        assert_eq!(sample_of(&a), sample_of(&a.clone()));
        assert_ne!(sample_of(&a), sample_of(&a[..99_999]));
        // A change in the first or last window is seen.
        for at in [0, a.len() - 1] {
            let mut b = a.clone();
            b[at] ^= 1;
            assert_ne!(sample_of(&a), sample_of(&b), "byte {at}");
        }
        let small = &a[..2048];
        let mut c = small.to_vec();
        c[1000] ^= 1;
        assert_ne!(sample_of(small), sample_of(&c), "short inputs are hashed whole");
    }

    #[test]
    fn keys_holding_reused_memory_are_forgotten() {
        let mut ix = Index::default();
        let k = |kernel, bias| IndexKey::Process(Key { seed: 3, kernel, bias, fingerprint: None });
        let a = ix.insert(k(0x1000, 0x9000), e(0, 64, 1));
        let b = ix.insert(k(0x2000, 0), e(64, 64, 2));
        ix.link(IndexKey::Persistent(7), a);
        // Memory holding a's bias was reused: a's in-process key goes, b's stays.
        assert_eq!(ix.forget_pointers(0x8000, 0x9001), 1);
        assert_eq!(ix.look_up(&k(0x1000, 0x9000)), None);
        assert_eq!(ix.look_up(&k(0x2000, 0)), Some(b));
        assert_eq!(ix.look_up(&IndexKey::Persistent(7)), Some(a), "persistent keys name no memory");
        assert_eq!(ix.find_content(1, 64, |_| true), Some(a), "the entry itself stays");
        // Its kernel pointer no longer leads anywhere either.
        assert_eq!(ix.forget_pointers(0x1000, 0x1001), 0);
        assert_eq!(ix.forget_pointers(0, usize::MAX), 1);
        assert_eq!(ix.look_up(&k(0x2000, 0)), None);
    }
}
