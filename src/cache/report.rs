//! What a cache tells its host: stats, and why it does without its file.

use super::{lock, Backing, Core, Stats};
use crate::logging::Level;

impl Core {
    pub fn stats(&self) -> Stats {
        let st = lock(&self.state);
        let mut s = st.stats;
        s.file_size = match (&st.store, &st.arena) {
            (Some(store), _) => store.file_len(),
            (None, Some(a)) if a.is_file_backed() => a.len() as u64,
            _ => 0,
        };
        s.backing = match (&st.arena, st.arena_full) {
            (Some(a), false) if a.is_file_backed() => Backing::XNNCACHE_BACKING_FILE,
            (Some(_), false) if st.store.is_none() && self.path.is_none() => Backing::XNNCACHE_BACKING_MEMORY,
            _ => Backing::XNNCACHE_BACKING_HEAP,
        } as u32;
        s.abi_generation = self.generation.number();
        // Staged bytes not yet in the file's pages: being written, or waiting
        // for the next write-back.
        let staged = match (&st.store, &st.arena) {
            (Some(_), Some(a)) if a.is_file_backed() => a.unsealed() as u64,
            _ => 0,
        };
        drop(st);
        let bg = lock(&self.background.state);
        s.pending_bytes = staged + bg.in_flight;
        s.last_commit_unix_ms = bg.last_commit_unix_ms;
        s
    }

    pub fn fallback_reason(&self) -> Option<String> {
        lock(&self.fallback_reason).clone()
    }

    /// Records why the cache does without (part of) its file, and logs it the
    /// first time this kind of fallback happens to this cache.
    pub(super) fn fall_back(&self, kind: &'static str, level: Level, why: String) {
        self.log_once(kind, level, &why);
        *lock(&self.fallback_reason) = Some(why);
    }

    /// Logs `why` the first time `kind` happens to this cache.
    pub(crate) fn log_once(&self, kind: &'static str, level: Level, why: &str) {
        if lock(&self.logged).insert(kind) {
            let path = self.path.as_ref().map_or("the cache's descriptor".into(), |p| p.display().to_string());
            crate::logging::emit(level, &format!("xnncache: {path}: {why}"));
        }
    }
}

