//! What the cache's mutex guards, and the helpers every step shares: loading
//! a committed index, the writer lock, giving space back, finding bytes.

use std::mem::ManuallyDrop;
use std::sync::{Mutex, MutexGuard};

use super::{Core, Stats, ThreadNo};
use crate::addrmap::AddrMap;
use crate::arena::Arena;
use crate::format::{self, KeyNames};
use crate::heap::{is_heap_offset, Heap};
use crate::identity::Registry;
use crate::index::{Entry, EntryId, Index, IndexKey, Map};
use crate::logging::Level;
use crate::store::Store;

/// A few threads (those inside a runtime's creation): a vector, not a hash
/// set, whose code would cost an app more than its look-ups ever save.
#[derive(Default)]
pub(super) struct ThreadSet(Vec<ThreadNo>);

impl ThreadSet {
    pub(super) fn contains(&self, t: &ThreadNo) -> bool {
        self.0.contains(t)
    }
    /// Returns whether `t` is new.
    pub(super) fn insert(&mut self, t: ThreadNo) -> bool {
        let new = !self.contains(&t);
        if new {
            self.0.push(t);
        }
        new
    }
    /// Returns whether `t` was there.
    pub(super) fn remove(&mut self, t: &ThreadNo) -> bool {
        let at = self.0.iter().position(|x| x == t);
        if let Some(i) = at {
            self.0.swap_remove(i);
        }
        at.is_some()
    }
    pub(super) fn clear(&mut self) {
        self.0.clear();
    }
}

/// One `alias_data` record: XNNPACK's converted copy means `original`.
#[derive(Clone, Copy)]
pub(super) struct Alias {
    pub(super) original: usize,
    pub(super) thread: ThreadNo,
}

/// Space handed out by `reserve` and not yet inserted.
pub(super) struct Pending {
    pub(super) offset: usize,
    pub(super) addr: *mut u8,
    pub(super) len: usize,
    pub(super) thread: ThreadNo,
}

pub(super) struct State {
    /// File or anonymous pages; `None` when the file could not be used at all.
    pub(super) arena: Option<Arena>,
    /// The persistent file around the arena, when there is one.
    pub(super) store: Option<Store>,
    pub(super) heap: Heap,
    pub(super) index: Index,
    pub(super) registry: Registry,
    pub(super) pending: Vec<Pending>,
    /// Threads whose last `look_up` missed: their next reserve packs a new weight.
    pub(super) missed: ThreadSet,
    /// `alias_data(alias, original)`: keys naming `alias` mean `original`,
    /// for look-ups of the thread that was told so. See [`Cache::alias`] for
    /// how long that lasts.
    pub(super) aliases: AddrMap<Alias>,
    /// Threads that looked up or packed since their last `alias_data`: their
    /// next `alias_data` starts another runtime's creation.
    pub(super) creating: ThreadSet,
    /// Set once the arena refused to grow; later space comes from the heap.
    pub(super) arena_full: bool,
    /// Persistent links not yet in the file's index.
    pub(super) uncommitted: usize,
    /// The names behind persistent keys: read from the file's index, and
    /// recorded for keys this process linked; written with the keys.
    pub(super) names: Map<u128, KeyNames>,
    /// A finalize came after the last reservation (what the drop-in's
    /// `is_finalized` reports; the write-back may still be running).
    pub(super) finalized: bool,
    pub(super) stats: Stats,
    /// Messages for the host, sent once the lock is released (a log callback
    /// may call back into the cache): see [`Locked`].
    pub(super) notes: Vec<Note>,
    /// What runtimes used, cut into programs, and the file's programs.
    pub(super) programs: super::programs::Programs,
    /// The fork generation this state belongs to; in a child of `fork()` it
    /// is left to the parent at the first look (`State::leave_to_parent`).
    pub(super) generation: u64,
}

/// A message decided under the lock, sent after it.
pub(super) struct Note {
    /// Each kind is logged once per cache.
    pub(super) kind: &'static str,
    pub(super) level: Level,
    pub(super) why: String,
    /// Also the reason `xnncache_stats`/`fallback_reason` give for the fallback.
    pub(super) is_fallback: bool,
}

impl State {
    /// Queues a fallback: logged (once per kind) and recorded as the reason
    /// once the lock is released.
    pub(super) fn fall_back(&mut self, kind: &'static str, level: Level, why: String) {
        self.notes.push(Note { kind, level, why, is_fallback: true });
    }

    /// Queues a message logged once per kind, after the lock is released.
    pub(super) fn log_once(&mut self, kind: &'static str, level: Level, why: &str) {
        self.notes.push(Note { kind, level, why: why.to_string(), is_fallback: false });
    }
}

/// The state, locked. Dropping it releases the lock first and then sends the
/// messages queued meanwhile, so that no host code runs under the lock.
pub(super) struct Locked<'a> {
    core: &'a Core,
    guard: ManuallyDrop<MutexGuard<'a, State>>,
}

impl<'a> Locked<'a> {
    pub(super) fn new(core: &'a Core, state: &'a Mutex<State>) -> Locked<'a> {
        let guard = ManuallyDrop::new(super::lock(state));
        core.state_holder.store(crate::sys::thread_id(), std::sync::atomic::Ordering::Relaxed);
        Locked { core, guard }
    }
}

impl std::ops::Deref for Locked<'_> {
    type Target = State;
    fn deref(&self) -> &State {
        &self.guard
    }
}

impl std::ops::DerefMut for Locked<'_> {
    fn deref_mut(&mut self) -> &mut State {
        &mut self.guard
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        let notes = std::mem::take(&mut self.guard.notes);
        self.core.state_holder.store(0, std::sync::atomic::Ordering::Relaxed);
        // SAFETY: the guard is dropped exactly once, here, and not used after.
        unsafe { ManuallyDrop::drop(&mut self.guard) };
        for note in notes {
            self.core.send(note);
        }
    }
}

// SAFETY: the raw pointers in `pending` name memory owned by the arena or the
// heap in the same struct; the state is only touched under the cache's mutex.
unsafe impl Send for State {}

impl State {
    pub(super) fn link(&mut self, key: IndexKey, id: EntryId) {
        let new = self.index.link(key, id);
        if new && matches!(key, IndexKey::Persistent(_)) && !is_heap_offset(self.index.get(id).offset) && self.store.is_some() {
            self.uncommitted += 1;
        }
    }

    /// Loads a committed index: every payload becomes an entry at its offset.
    pub(super) fn load(&mut self, committed: format::Index) {
        let ids: Vec<EntryId> = committed
            .payloads
            .iter()
            .map(|p| {
                let offset = p.offset as usize;
                self.index.find_offset(offset).unwrap_or_else(|| {
                    self.stats.loaded_entries += 1;
                    self.stats.entries += 1;
                    self.stats.stored_bytes += p.size;
                    self.index.insert_unlinked(Entry::loaded(offset, p.size as usize, p.checksum))
                })
            })
            .collect();
        // The newest commit's programs replace the ones we knew.
        self.load_programs(&committed.programs, &ids);
        for (key, names) in committed.names {
            self.names.entry(key).or_insert(names);
        }
        for k in &committed.keys {
            let (key, id) = (IndexKey::Persistent(k.key), ids[k.payload as usize]);
            self.index.link(key, id);
            // A copy of the same bytes that we hold under this key (packed
            // while another process held the lock) would make the key
            // ambiguous: the file's entry replaces it for look-ups.
            let loaded = *self.index.get(id);
            let copies: Vec<EntryId> = self
                .index
                .named_by(&key)
                .iter()
                .copied()
                .filter(|&other| other != id && self.same_bytes(self.index.get(other), &loaded))
                .collect();
            for other in copies {
                self.index.unlink(&key, other);
            }
        }
    }

    /// Whether this process handed out file space past the newest commit:
    /// bytes a commit must cover before another writer may append there.
    pub(super) fn grown_past_commit(&self) -> bool {
        match (&self.store, &self.arena) {
            (Some(store), Some(arena)) => arena.used_past(store.committed_end().max(format::DATA_START)),
            _ => false,
        }
    }

    /// Takes the samples of the entries loaded from the file, so that a new
    /// packing can be folded into them: once, at the first packing of the
    /// session (a launch that only looks up never reads their bytes).
    pub(super) fn sample_loaded(&mut self) {
        for id in self.index.take_unsampled() {
            let e = *self.index.get(id);
            if let Some(bytes) = entry_bytes(self.arena.as_ref(), &self.heap, &e) {
                let sample = crate::index::sample_of(bytes);
                self.index.set_sample(id, sample);
            }
        }
    }

    pub(super) fn same_bytes(&self, a: &Entry, b: &Entry) -> bool {
        if a.size != b.size || matches!((a.checksum, b.checksum), (Some(x), Some(y)) if x != y) {
            return false;
        }
        let bytes = |e| entry_bytes(self.arena.as_ref(), &self.heap, e);
        matches!((bytes(a), bytes(b)), (Some(x), Some(y)) if x == y)
    }

    /// Takes the writer lock if it is free and adopts what other processes
    /// committed meanwhile. False: another process holds it.
    pub(super) fn lock_and_follow(&mut self) -> std::io::Result<bool> {
        let Some(store) = self.store.as_mut() else { return Ok(false) };
        if store.is_locked() {
            return Ok(true);
        }
        let Some(newer) = store.try_lock()? else { return Ok(false) };
        if let Some((header, index)) = newer {
            let arena = self.arena.as_mut().expect("a store has an arena");
            if let Err(e) = arena.adopt_committed(header.data_end) {
                store.unlock();
                return Err(std::io::Error::other(format!("cannot follow another process's commit: {e}")));
            }
            self.load(index);
        }
        if let Some(arena) = self.arena.as_mut() {
            // Another process may have trimmed the file below our slack.
            let _ = arena.forget_beyond(self.store.as_ref().expect("checked").file_len());
        }
        Ok(true)
    }

    /// Whether new weights may go into the file now: takes the writer lock
    /// if needed, and adopts what other processes committed meanwhile.
    pub(super) fn may_write_file(&mut self) -> bool {
        match self.lock_and_follow() {
            Ok(true) => true,
            Ok(false) => {
                let why = "another process holds the cache file's writer lock: new weights of this session stay in memory";
                self.log_once("busy", Level::XNNCACHE_LOG_WARN, why);
                false
            }
            Err(e) => {
                self.fall_back("lock", Level::XNNCACHE_LOG_ERROR, format!("cannot lock or follow the cache file: {e}"));
                false
            }
        }
    }

    pub(super) fn give_back(&mut self, offset: usize, len: usize) {
        if is_heap_offset(offset) {
            self.heap.free(offset);
        } else if let Some(arena) = self.arena.as_mut() {
            arena.free(offset, len);
        }
    }
}

/// The bytes of an entry.
pub(super) fn entry_bytes<'a>(arena: Option<&'a Arena>, heap: &'a Heap, e: &Entry) -> Option<&'a [u8]> {
    // SAFETY: an entry's offset resolves to `e.size` readable bytes, which
    // neither move nor change while the arena or heap that holds them lives.
    addr_of(arena, heap, e.offset).map(|a| unsafe { core::slice::from_raw_parts(a as *const u8, e.size) })
}

pub(super) fn addr_of(arena: Option<&Arena>, heap: &Heap, offset: usize) -> Option<*mut u8> {
    if is_heap_offset(offset) {
        heap.addr(offset)
    } else {
        arena?.addr(offset)
    }
}
