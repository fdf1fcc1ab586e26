//! Checking and rewriting the file: verify, compact, and the space a close
//! gives back.

use super::state::{entry_bytes, State};
use super::{lock, Core};
use crate::error::{Error, Result, Status};
use crate::format::{self, KeyNames};
use crate::heap::is_heap_offset;
use crate::index::{EntryId, Map};

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
/// After this cache's commit dropped entries (`crate::retention`): the
/// share past which the file would be over 1.10x what it keeps.
pub(super) const DROPPED_RECLAIM_PERCENT: u64 = 9;

impl Core {
    /// Checks every committed payload against its checksum. The hashing
    /// runs with the state unlocked.
    pub fn verify(&self) -> Result<()> {
        let payloads: Vec<(usize, usize, Option<u64>)> = {
            let st = self.locked();
            let Some(arena) = st.arena.as_ref() else { return Ok(()) };
            st.index.entries().iter().filter(|e| e.committed).map(|e| (arena.addr(e.offset).map_or(0, |a| a as usize), e.size, e.checksum)).collect()
        };
        let bad = payloads
            .iter()
            .filter(|&&(addr, size, checksum)| {
                // SAFETY: a committed entry's bytes are mapped for as long as
                // the cache lives and never move (0: not mapped, counted bad).
                addr == 0 || checksum != Some(crate::format::checksum(unsafe { core::slice::from_raw_parts(addr as *const u8, size) }))
            })
            .count();
        match bad {
            0 => Ok(()),
            _ => Err(Error::new(Status::XNNCACHE_CORRUPT, format!("{bad} of {} payloads fail their checksum", payloads.len()))),
        }
    }

    /// Rewrites the file with only the persistent entries this session used,
    /// and replaces the old file atomically. This cache keeps working on its
    /// mapping of the old file but persists nothing more.
    pub fn compact(&self) -> Result<u64> {
        self.rewrite(Keep::Used)
    }

    /// Writes a new file of the entries `keep` selects, with the state
    /// unlocked (its bytes never move); the writer lock keeps other
    /// processes out meanwhile, and `finalizing` this cache's write-backs.
    pub(super) fn rewrite(&self, keep: Keep) -> Result<u64> {
        if self.forked() {
            // `finalizing` may be held by a parent's thread that is not here.
            return Err(Error::new(Status::XNNCACHE_INVALID_STATE, "this cache was opened before fork(): only the process that opened it may rewrite its file"));
        }
        self.hurry_write_back(); // it may be yielding, with `finalizing` held
        let _one_at_a_time = lock(&self.finalizing);
        let _mark = super::lifetime::Holding::new(&self.finalizing_holder);
        self.rewrite_held(keep)
    }

    /// [`Core::rewrite`] by a caller that holds `finalizing` (the write-back
    /// that dropped entries).
    pub(super) fn rewrite_held(&self, keep: Keep) -> Result<u64> {
        let (compaction, payloads, keys, names, programs) = {
            let mut st = self.locked();
            let st = &mut *st;
            if st.store.is_none() || st.arena.is_none() {
                return Err(Error::new(Status::XNNCACHE_INVALID_STATE, "compact needs a writable cache file"));
            }
            match st.lock_and_follow() {
                Ok(true) => {}
                Ok(false) => return Err(Error::new(Status::XNNCACHE_BUSY, "another process is writing the cache file")),
                Err(e) => return Err(Error::io("cannot lock the cache file", &e)),
            }
            let Live { ids, keys, names, programs } = st.live_links(keep);
            let payloads: Vec<(usize, usize, Option<u64>)> = ids
                .iter()
                .map(|&id| {
                    let e = st.index.get(id);
                    (entry_bytes(st.arena.as_ref(), &st.heap, e).map_or(0, |b| b.as_ptr() as usize), e.size, e.checksum)
                })
                .collect();
            let compaction = st.store.as_ref().map(|s| s.prepare_compaction());
            match compaction {
                Some(Ok(c)) => (c, payloads, keys, names, programs),
                Some(Err(e)) => {
                    if let Some(s) = st.store.as_mut() {
                        s.unlock();
                    }
                    return Err(Error::io("cannot compact the cache file", &e));
                }
                None => unreachable!("checked above"),
            }
        };
        let payloads: Option<Vec<(&[u8], u64)>> = payloads
            .into_iter()
            .map(|(addr, size, checksum)| {
                // SAFETY: an entry's bytes stay mapped, unchanged, at the same
                // address while the cache lives (live_links names no heap entry).
                let bytes = (addr != 0).then(|| unsafe { core::slice::from_raw_parts(addr as *const u8, size) })?;
                Some((bytes, checksum.unwrap_or_else(|| crate::format::checksum(bytes))))
            })
            .collect();
        let result = match payloads {
            Some(payloads) => compaction.write(&payloads, &keys, names, programs),
            None => Err(std::io::Error::other("an entry does not resolve")),
        };
        let mut st = self.locked();
        if let Some(store) = st.store.as_mut() {
            if result.is_ok() {
                store.compacted();
            }
            store.unlock();
        }
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
        let st = self.locked();
        let store = st.store.as_ref().filter(|s| s.can_write())?;
        let Live { ids, keys, names, programs } = st.live_links(keep);
        let index = format::index_len(ids.len(), keys.len(), names.iter().map(|(_, n)| n), &programs) as u64;
        let live: u64 = ids.iter().map(|&id| st.index.get(id).size as u64).sum::<u64>() + format::DATA_START + index;
        let len = store.file_len().max(1);
        Some(len.saturating_sub(live) * 100 / len)
    }

    /// Whether close should give space back: only after this cache wrote to
    /// the file (a launch that adds nothing never touches it), and only when
    /// unreachable space is at least `RECLAIM_PERCENT` of a file over
    /// `RECLAIM_MIN_BYTES`, or, after a commit that dropped entries whose
    /// rewrite did not happen then, `DROPPED_RECLAIM_PERCENT` of any file.
    pub(super) fn wrote_and_left_garbage(&self) -> bool {
        let (wrote, large, dropped) = {
            let st = self.locked();
            let large = st.store.as_ref().is_some_and(|s| s.file_len() >= format::DATA_START + RECLAIM_MIN_BYTES);
            (st.stats.commits > 0, large, st.stats.dropped_entries > 0)
        };
        wrote && self.outside_percent(Keep::Committed).is_some_and(|p| (large && p >= RECLAIM_PERCENT) || (dropped && p >= DROPPED_RECLAIM_PERCENT))
    }
}

impl Drop for Core {
    fn drop(&mut self) {
        if self.forked() {
            // A child of fork(): nothing of the file is ours (see `lifetime`).
            let st = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
            if st.generation != super::lifetime::fork_generation() {
                st.leave_to_parent();
            }
            return;
        }
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

/// What a rewrite keeps: entries, their keys (with the entry's position in
/// `ids`), those keys' names, and the programs of those entries.
pub(super) struct Live {
    ids: Vec<EntryId>,
    keys: Vec<(u128, u32)>,
    names: Vec<(u128, KeyNames)>,
    programs: Vec<format::Program>,
}

impl State {
    /// The file entries `keep` selects that persistent keys reach, those
    /// keys, and their names.
    pub(super) fn live_links(&self, keep: Keep) -> Live {
        let mut ids: Vec<EntryId> = Vec::new();
        // Keyed like the index's `by_offset` (one map type less in an app).
        let mut position: Map<usize, u32> = Map::default();
        let mut keys = Vec::new();
        let mut names = Vec::new();
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
            let pos = *position.entry(id as usize).or_insert_with(|| {
                ids.push(id);
                (ids.len() - 1) as u32
            });
            keys.push((key, pos));
            // One record per key, however many entries it links (sorted: they are adjacent).
            let named = names.last().is_some_and(|(k, _): &(u128, KeyNames)| *k == key);
            if let Some(n) = self.names.get(&key).filter(|_| !named) {
                names.push((key, n.clone()));
            }
        }
        let programs = super::programs::recorded(&self.programs.held, &position);
        Live { ids, keys, names, programs }
    }
}

