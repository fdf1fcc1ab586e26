//! What a cache tells its host: stats, and why it does without its file.

use super::state::Note;
use super::{lock, Backing, Core, Stats};
use crate::format::KeyNames;
use crate::logging::Level;

impl Core {
    pub fn stats(&self) -> Stats {
        let st = self.locked();
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

    /// The names of the packed weights this cache can find by look-up: each
    /// that its file's index held at open (or at a commit of another process
    /// it adopted since), and each stored or folded under a named key since.
    /// Sorted, each once. Reads no payload.
    pub fn names(&self) -> Vec<KeyNames> {
        let mut names: Vec<KeyNames> = self.locked().names.values().cloned().collect();
        names.sort_unstable_by(|a, b| (&a.weights, &a.bias).cmp(&(&b.weights, &b.bias)));
        names.dedup();
        names
    }

    pub fn fallback_reason(&self) -> Option<String> {
        lock(&self.fallback_reason).clone()
    }

    /// Records why the cache does without (part of) its file, and logs it the
    /// first time this kind of fallback happens to this cache.
    /// Never call it with the state locked: the host's callback may call back
    /// into this cache (under the lock, queue a [`Note`] instead).
    pub(super) fn fall_back(&self, kind: &'static str, level: Level, why: String) {
        *lock(&self.fallback_reason) = Some(why.clone());
        self.log_once(kind, level, &why);
    }

    /// Sends a message queued under the lock, now that it is released.
    pub(super) fn send(&self, note: Note) {
        if note.is_fallback {
            self.fall_back(note.kind, note.level, note.why);
        } else {
            self.log_once(note.kind, note.level, &note.why);
        }
    }

    /// Logs `why` the first time `kind` happens to this cache. Not with the
    /// state locked (see [`Core::fall_back`]).
    pub(crate) fn log_once(&self, kind: &'static str, level: Level, why: &str) {
        let first = {
            let mut logged = lock(&self.logged);
            let new = !logged.contains(&kind);
            if new {
                logged.push(kind);
            }
            new
        };
        if first {
            let path = self.path.as_ref().map_or("the cache's descriptor".into(), |p| p.display().to_string());
            crate::logging::emit(level, &format!("xnncache: {path}: {why}"));
        }
    }
}

