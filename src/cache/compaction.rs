//! Checking and rewriting the file: verify, compact, and the space a close
//! gives back.

use std::collections::HashMap;

use super::state::{entry_bytes, State};
use super::{lock, Core};
use crate::error::{Error, Result, Status};
use crate::format;
use crate::heap::is_heap_offset;
use crate::index::EntryId;

/// Which persistent entries a rewrite of the file keeps.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Keep {
    /// Those this session used (`compact`).
    Used,
    /// Every committed one: only space no one can reach is given back.
    Committed,
}

/// Space no entry reaches (unregistered weights, which are never looked up
/// again, old indexes) is given back at close once it is this share of the
/// file: without it, a host that registers nothing grows the file by its
/// packed bytes at every launch.
pub(super) const RECLAIM_PERCENT: u64 = 50;
/// ... and at least this many bytes, so small files are not rewritten for little.
pub(super) const RECLAIM_MIN_BYTES: u64 = 4 << 20;

impl Core {
    /// Checks every committed payload against its checksum.
    pub fn verify(&self) -> Result<()> {
        let st = lock(&self.state);
        let Some(arena) = st.arena.as_ref() else { return Ok(()) };
        let payloads: Vec<format::Payload> = st
            .index
            .entries()
            .iter()
            .filter(|e| e.committed)
            .map(|e| format::Payload { offset: e.offset as u64, size: e.size as u64, checksum: e.checksum.expect("committed entries have checksums") })
            .collect();
        crate::store::verify_payloads(arena, &payloads).map_err(|r| Error::new(Status::XNNCACHE_CORRUPT, r.message().to_string()))
    }

    /// Rewrites the file with only the persistent entries this session used,
    /// and replaces the old file atomically. This cache keeps working on its
    /// mapping of the old file but persists nothing more.
    pub fn compact(&self) -> Result<u64> {
        self.rewrite(Keep::Used)
    }

    pub(super) fn rewrite(&self, keep: Keep) -> Result<u64> {
        let _one_at_a_time = lock(&self.finalizing);
        let mut st = lock(&self.state);
        let st = &mut *st;
        if st.store.is_none() || st.arena.is_none() {
            return Err(Error::new(Status::XNNCACHE_INVALID_STATE, "compact needs a writable cache file"));
        }
        match st.lock_and_follow() {
            Ok(true) => {}
            Ok(false) => return Err(Error::new(Status::XNNCACHE_BUSY, "another process is writing the cache file")),
            Err(e) => return Err(Error::io("cannot lock the cache file", &e)),
        }
        let (ids, keys) = st.live_links(keep);
        let (Some(store), Some(arena)) = (st.store.as_mut(), st.arena.as_ref()) else { unreachable!("checked above") };
        let payloads: Vec<(&[u8], u64)> = ids
            .iter()
            .map(|&id| {
                let e = st.index.get(id);
                let bytes = entry_bytes(Some(arena), &st.heap, e).expect("entries resolve");
                (bytes, e.checksum.unwrap_or_else(|| xxhash_rust::xxh3::xxh3_64(bytes)))
            })
            .collect();
        let result = store.compact(&payloads, &keys);
        store.unlock();
        result.map_err(|e| Error::io("cannot compact the cache file", &e))
    }

    /// The share (percent) of the file that the weights this session used do
    /// not reach: old indexes, unused entries, unregistered weights, slack.
    pub fn unreachable_percent(&self) -> Option<u64> {
        self.outside_percent(Keep::Used)
    }

    /// The share (percent) of the file, and its bytes, that no persistent
    /// entry reaches: space nobody can ever look up again.
    pub(super) fn outside_percent(&self, keep: Keep) -> Option<u64> {
        let st = lock(&self.state);
        let store = st.store.as_ref().filter(|s| s.can_write())?;
        let (ids, keys) = st.live_links(keep);
        let live: u64 = ids.iter().map(|&id| st.index.get(id).size as u64).sum::<u64>() + format::DATA_START + 24 * (ids.len() + keys.len()) as u64;
        let len = store.file_len().max(1);
        Some(len.saturating_sub(live) * 100 / len)
    }

    /// Whether close should give space back: only after this cache wrote to
    /// the file (a launch that adds nothing never touches it), and only when
    /// unreachable space is at least `RECLAIM_PERCENT` of a file over
    /// `RECLAIM_MIN_BYTES`.
    pub(super) fn wrote_and_left_garbage(&self) -> bool {
        let wrote = {
            let st = lock(&self.state);
            st.stats.commits > 0 && st.store.as_ref().is_some_and(|s| s.file_len() >= format::DATA_START + RECLAIM_MIN_BYTES)
        };
        wrote && self.outside_percent(Keep::Committed).is_some_and(|p| p >= RECLAIM_PERCENT)
    }
}

impl Drop for Core {
    fn drop(&mut self) {
        // Best effort: a busy or failing rewrite leaves the file as it is.
        if self.compact_percent > 0 && self.unreachable_percent().is_some_and(|p| p >= self.compact_percent as u64) {
            let _ = self.compact();
        } else if self.wrote_and_left_garbage() {
            let _ = self.rewrite(Keep::Committed);
        }
        let st = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        if let Some(store) = st.store.as_mut() {
            store.close(st.arena.as_mut());
        }
    }
}

impl State {
    /// The file entries this session used that persistent keys reach, and
    /// those keys (with the entry's position in the first list).
    pub(super) fn live_links(&self, keep: Keep) -> (Vec<EntryId>, Vec<(u128, u32)>) {
        let mut ids: Vec<EntryId> = Vec::new();
        let mut position: HashMap<EntryId, u32> = HashMap::new();
        let mut keys = Vec::new();
        let mut links: Vec<(u128, EntryId)> = self.index.persistent_links().collect();
        links.sort_unstable();
        for (key, id) in links {
            let e = self.index.get(id);
            let kept = match keep {
                Keep::Used => e.used,
                Keep::Committed => e.committed,
            };
            if !kept || is_heap_offset(e.offset) {
                continue;
            }
            let pos = *position.entry(id).or_insert_with(|| {
                ids.push(id);
                (ids.len() - 1) as u32
            });
            keys.push((key, pos));
        }
        (ids, keys)
    }
}

