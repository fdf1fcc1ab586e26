//! The cache: what each provider callback does, in safe Rust.
//!
//! The life of one packed weight:
//!
//! 1. `look_up(key)`: the index answers with an offset, or "not found". Keys
//!    whose pointers lie in registered weights are persistent: entries found
//!    by them may come from an earlier process, through the mapped file.
//! 2. `reserve(n)`: on a miss, XNNPACK asks for `n` bytes to pack into. After
//!    a missed look-up they come straight from the file (under the writer
//!    lock); otherwise (paths that never look up, or no right to write) they
//!    are scratch on the heap. The space is *pending* until step 3; a second
//!    reserve on the same thread supersedes it and reuses its space.
//! 3. `look_up_or_insert(key, ptr, n)`: XNNPACK has packed into `ptr`. If the
//!    same bytes are already stored (under any key), the new copy is folded into
//!    the old one and its space given back; otherwise it becomes an entry, in
//!    the file when the file can take it. The returned offset always resolves.
//! 4. `offset_to_addr(offset)`: at every reshape; addresses never move.
//! 5. `finalize()`: everything inserted so far is written back and made
//!    read-only; new persistent entries are committed to the file's index.
//!
//! All of it runs under one mutex; only the write-back of payload pages in
//! `finalize` runs outside it, on pages nobody writes any more.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::ThreadId;

use crate::abi::{Generation, Key, NOT_FOUND};
use crate::arena::{Arena, ArenaOptions};
use crate::error::{Error, Result, Status};
use crate::format::{self, Compat};
use crate::heap::{is_heap_offset, Heap};
use crate::identity::{content_identity, Registry};
use crate::index::{Entry, EntryId, Index, IndexKey};
use crate::logging::Level;
use crate::store::{FileState, Source, Store, StoreOptions};

/// Alignment of every packed weight: XNNPACK's allocation alignment is 64 on
/// x86 and 16 on Arm; cache-line alignment serves both.
pub(crate) const ALIGNMENT: usize = 64;

/// Where a cache keeps its packed bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(non_camel_case_types)]
pub enum xnncache_backing {
    /// Pages of the cache file, mapped `MAP_SHARED`.
    XNNCACHE_BACKING_FILE = 0,
    /// Anonymous memory, because no path was given.
    XNNCACHE_BACKING_MEMORY = 1,
    /// Heap memory, because the file could not be used or grown (the message
    /// of `xnncache_last_error()` after `xnncache_open` says why).
    XNNCACHE_BACKING_HEAP = 2,
}

pub use xnncache_backing as Backing;

/// What a cache has done so far.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Distinct packed weights stored.
    pub entries: u64,
    /// Bytes held by those entries.
    pub stored_bytes: u64,
    /// Bytes XNNPACK packed through this cache (including duplicates it folded).
    pub packed_bytes: u64,
    /// `look_up` calls, and how many of them found an entry.
    pub look_ups: u64,
    pub hits: u64,
    /// Bytes XNNPACK did not have to pack because `look_up` found them.
    pub found_bytes: u64,
    /// Packings whose bytes were already stored: kept once, space given back.
    pub duplicates_folded: u64,
    pub folded_bytes: u64,
    /// Bytes of entries on the heap because the file could not take them.
    pub heap_fallback_bytes: u64,
    /// Length of the cache file (0 without one).
    pub file_size: u64,
    /// Bytes made clean and read-only by `xnncache_finalize`.
    pub sealed_bytes: u64,
    /// Entries read from the file at open.
    pub loaded_entries: u64,
    /// Entries of this session that will not be in the file: their weights
    /// were not registered, or the file could not take them.
    pub not_persisted: u64,
    /// Commits this cache wrote to the file.
    pub commits: u64,
    /// Packed bytes not yet written back to the file (they are in memory,
    /// and runtimes use them; a commit follows their write-back).
    pub pending_bytes: u64,
    /// When this cache's last commit became durable, in milliseconds since
    /// 1970-01-01 UTC; 0 before its first.
    pub last_commit_unix_ms: u64,
    /// Where new entries go now (an `xnncache_backing` value).
    pub backing: u32,
    /// The provider ABI generation the caller compiled against (1, 2 or 3).
    pub abi_generation: u32,
    /// What opening found (an `xnncache_file_state` value).
    pub file_state: u32,
    pub _reserved: u32,
}

/// How to open a cache.
#[derive(Clone, Debug)]
pub struct CacheOptions {
    pub source: Option<Source>,
    pub generation: Generation,
    /// Fail instead of falling back to the heap when the file is unusable.
    pub require_file: bool,
    /// Never write the file; misses go to memory.
    pub read_only: bool,
    /// Check every payload's checksum at open.
    pub verify: bool,
    /// XNNPACK's build identifier; persistence needs it.
    pub build_id: Vec<u8>,
    /// Compact at close when this share (percent) of the file is unreachable; 0: never.
    pub compact_percent: u32,
    /// Write back and commit inside `finalize` instead of in the background.
    pub sync_writeback: bool,
    /// Permission bits of new cache files (before the umask).
    pub file_mode: u32,
    /// Use a file owned by another user (read-only) instead of refusing it.
    pub allow_foreign: bool,
    /// Address space to reserve for the first arena segment.
    pub reservation: Option<usize>,
}

impl CacheOptions {
    pub fn memory(generation: Generation) -> CacheOptions {
        CacheOptions {
            source: None,
            generation,
            require_file: false,
            read_only: false,
            verify: false,
            build_id: Vec::new(),
            compact_percent: 0,
            sync_writeback: false,
            file_mode: crate::store::PRIVATE_FILE_MODE,
            allow_foreign: false,
            reservation: None,
        }
    }

    pub fn file(path: impl Into<PathBuf>, generation: Generation) -> CacheOptions {
        CacheOptions { source: Some(Source::Path(path.into())), ..CacheOptions::memory(generation) }
    }
}

/// A commit being made: its index (already written into the arena) and
/// what it covers.
struct Commit {
    index_offset: u64,
    index: Vec<u8>,
    data_end: u64,
    /// The entries whose payloads the index names.
    entries: Vec<EntryId>,
    /// How many uncommitted persistent links it covers.
    links: usize,
}

/// One `alias_data` record: XNNPACK's converted copy means `original`.
#[derive(Clone, Copy)]
struct Alias {
    original: usize,
    thread: ThreadId,
}

/// Space handed out by `reserve` and not yet inserted.
struct Pending {
    offset: usize,
    addr: *mut u8,
    len: usize,
    thread: ThreadId,
}

struct State {
    /// File or anonymous pages; `None` when the file could not be used at all.
    arena: Option<Arena>,
    /// The persistent file around the arena, when there is one.
    store: Option<Store>,
    heap: Heap,
    index: Index,
    registry: Registry,
    pending: Vec<Pending>,
    /// Threads whose last `look_up` missed: their next reserve packs a new weight.
    missed: HashSet<ThreadId>,
    /// `alias_data(alias, original)`: keys naming `alias` mean `original`,
    /// for look-ups of the thread that was told so. See [`Cache::alias`] for
    /// how long that lasts.
    aliases: BTreeMap<usize, Alias>,
    /// Threads that looked up or packed since their last `alias_data`: their
    /// next `alias_data` starts another runtime's creation.
    creating: HashSet<ThreadId>,
    /// Set once the arena refused to grow; later space comes from the heap.
    arena_full: bool,
    /// Persistent links not yet in the file's index.
    uncommitted: usize,
    /// A finalize came after the last reservation (what the drop-in's
    /// `is_finalized` reports; the write-back may still be running).
    finalized: bool,
    stats: Stats,
}

// SAFETY: the raw pointers in `pending` name memory owned by the arena or the
// heap in the same struct; the state is only touched under the cache's mutex.
unsafe impl Send for State {}

/// A weights cache. The packing state lives in a [`Core`] shared with the
/// background writer thread, which writes packed pages back to the file and
/// commits them after [`Cache::finalize`] has returned.
pub struct Cache {
    core: Arc<Core>,
    /// The write-back thread, started by the first finalize that needs it.
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// Everything a cache holds; methods that answer XNNPACK are here.
pub struct Core {
    generation: Generation,
    path: Option<PathBuf>,
    compact_percent: u32,
    /// Write back on the finalizing thread instead of in the background.
    sync_writeback: bool,
    state: Mutex<State>,
    /// Serialises write-backs and compaction, which run outside `state`'s lock.
    finalizing: Mutex<()>,
    /// Why the file is not (or no longer) used, for stats and messages.
    fallback_reason: Mutex<Option<String>>,
    /// Kinds of fallback already logged (each is logged once per cache).
    logged: Mutex<HashSet<&'static str>>,
    background: Background,
}

/// What the write-back thread is asked to do and has done.
#[derive(Default)]
struct Background {
    state: Mutex<WriteBack>,
    changed: Condvar,
}

#[derive(Default)]
struct WriteBack {
    /// A finalize asked for a write-back the thread has not started yet.
    requested: bool,
    running: bool,
    /// The cache is closing: finish what was requested, then end.
    stop: bool,
    /// Bytes being written back now.
    in_flight: u64,
    /// Why a write-back failed (after that the file takes nothing more from this cache).
    error: Option<String>,
    /// When the last commit became durable (milliseconds since 1970), 0: none yet.
    last_commit_unix_ms: u64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic under the lock is caught at the C boundary; the state it left is
    // still consistent enough to answer (entries are only ever added).
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Cache {
    pub fn open(options: &CacheOptions) -> Result<Cache> {
        Ok(Cache { core: Arc::new(Core::open(options)?), writer: Mutex::new(None) })
    }

    /// Step 5: every page packed so far becomes clean and read-only and new
    /// persistent entries are committed, in the background: the runtime can
    /// run as soon as this returns (its packed weights are already in place,
    /// in memory that the write-back later swaps for the file's pages).
    /// [`Cache::wait`] waits for it. With `sync_writeback`, or without a
    /// file, the work is done before returning, and its error returned.
    pub fn finalize(&self) -> Result<()> {
        let core = &self.core;
        if !core.end_creations() {
            return Ok(()); // nothing new since the last write-back (a warm launch)
        }
        if core.sync_writeback || !core.has_store() {
            return core.write_back().map(|_| ());
        }
        lock(&core.background.state).requested = true;
        core.background.changed.notify_all();
        let mut writer = lock(&self.writer);
        if writer.is_none() {
            let shared = Arc::clone(core);
            match std::thread::Builder::new().name("xnncache-writeback".into()).spawn(move || shared.write_back_loop()) {
                Ok(handle) => *writer = Some(handle),
                Err(_) => {
                    // No thread to be had: do the work here, as requested.
                    lock(&core.background.state).requested = false;
                    return core.write_back().map(|_| ());
                }
            }
        }
        Ok(())
    }

    /// Waits until every finalize so far has been written back and committed,
    /// at most `timeout` (`None`: as long as it takes). `XNNCACHE_BUSY` when
    /// the time ran out; `XNNCACHE_IO_ERROR` when the last write-back failed
    /// (the runtime keeps its weights in memory, the file its last commit).
    pub fn wait(&self, timeout: Option<std::time::Duration>) -> Result<()> {
        let bg = &self.core.background;
        let deadline = timeout.map(|t| std::time::Instant::now() + t);
        let mut st = lock(&bg.state);
        while st.requested || st.running {
            st = match deadline {
                None => bg.changed.wait(st).unwrap_or_else(|e| e.into_inner()),
                Some(d) => {
                    let now = std::time::Instant::now();
                    if now >= d {
                        return Err(Error::new(Status::XNNCACHE_BUSY, "the write-back of packed weights is still running"));
                    }
                    bg.changed.wait_timeout(st, d - now).unwrap_or_else(|e| e.into_inner()).0
                }
            };
        }
        match &st.error {
            Some(e) => Err(Error::new(Status::XNNCACHE_IO_ERROR, e.clone())),
            None => Ok(()),
        }
    }
}

impl std::ops::Deref for Cache {
    type Target = Core;
    fn deref(&self) -> &Core {
        &self.core
    }
}

impl Drop for Cache {
    /// Closing waits for the write-back in progress (it ends in a commit, so
    /// the next launch finds this one's weights); the previous commit stays
    /// valid whatever happens meanwhile.
    fn drop(&mut self) {
        lock(&self.core.background.state).stop = true;
        self.core.background.changed.notify_all();
        if let Some(handle) = lock(&self.writer).take() {
            let _ = handle.join();
        }
    }
}

impl Core {
    fn open(options: &CacheOptions) -> Result<Core> {
        let arena_options = match options.reservation {
            Some(r) => ArenaOptions::new().reservation(r),
            None => ArenaOptions::new(),
        };
        let mut state = State {
            arena: None,
            store: None,
            heap: Heap::default(),
            index: Index::default(),
            registry: Registry::default(),
            pending: Vec::new(),
            missed: HashSet::new(),
            aliases: BTreeMap::new(),
            creating: HashSet::new(),
            arena_full: false,
            uncommitted: 0,
            finalized: false,
            stats: Stats::default(),
        };
        let mut reason = None;
        let path = match &options.source {
            Some(Source::Path(p)) => Some(p.clone()),
            _ => None,
        };
        let where_ = || path.as_ref().map_or("the descriptor".to_string(), |p| p.display().to_string());
        let source = match &options.source {
            Some(_) if options.build_id.is_empty() => {
                // Without XNNPACK's build identifier a file could be reused by
                // another XNNPACK build: keep the weights in memory instead.
                reason = Some("no XNNPACK build identifier was given (use XNNCACHE_OPTIONS_INIT): packed weights stay in memory".into());
                None
            }
            other => other.as_ref(),
        };
        match source {
            None => {
                state.arena = Some(arena_options.anonymous().map_err(|e| {
                    Error::new(Status::XNNCACHE_OUT_OF_MEMORY, format!("cannot reserve address space: {e}"))
                })?);
                state.stats.file_state = FileState::XNNCACHE_FILE_NONE as u32;
            }
            Some(source) => {
                let store_options = StoreOptions {
                    source: source.clone(),
                    read_only: options.read_only,
                    verify: options.verify,
                    compat: Compat {
                        abi_generation: options.generation.number(),
                        build_id: options.build_id.clone(),
                        cpu_id: crate::identity::cpu_identity(),
                    },
                    file_mode: options.file_mode,
                    allow_foreign: options.allow_foreign,
                };
                match Store::open(&store_options, &arena_options) {
                    Ok(opened) => {
                        state.stats.file_state = opened.state as u32;
                        reason = opened.reason.map(|r| format!("{}: {r}", where_()));
                        if opened.state == FileState::XNNCACHE_FILE_UNUSABLE && options.require_file {
                            return Err(Error::new(Status::XNNCACHE_IO_ERROR, reason.unwrap_or_default()));
                        }
                        state.arena = opened.arena;
                        state.store = opened.store;
                        if let Some(committed) = opened.committed {
                            state.load(&committed);
                        }
                    }
                    Err(e) if options.require_file => return Err(Error::io(format!("cannot use {}", where_()), &e)),
                    Err(e) => {
                        state.stats.file_state = FileState::XNNCACHE_FILE_UNUSABLE as u32;
                        reason = Some(format!("cannot use {}: {e}; packed weights go to the heap", where_()));
                    }
                }
            }
        }
        Ok(Core {
            generation: options.generation,
            path,
            compact_percent: options.compact_percent,
            sync_writeback: options.sync_writeback,
            state: Mutex::new(state),
            finalizing: Mutex::new(()),
            fallback_reason: Mutex::new(None),
            logged: Mutex::new(HashSet::new()),
            background: Background::default(),
        }
        .with_reason(reason))
    }

    pub fn generation(&self) -> Generation {
        self.generation
    }

    pub fn fallback_reason(&self) -> Option<String> {
        lock(&self.fallback_reason).clone()
    }

    fn with_reason(self, reason: Option<String>) -> Core {
        if let Some(r) = reason {
            self.fall_back("open", Level::XNNCACHE_LOG_WARN, r);
        }
        self
    }

    /// Records why the cache does without (part of) its file, and logs it the
    /// first time this kind of fallback happens to this cache.
    fn fall_back(&self, kind: &'static str, level: Level, why: String) {
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

    /// Gives the constant buffer `data` a stable identity: `name` (e.g.
    /// ExecuTorch's named-data key), or with `None` a digest of its bytes. A
    /// later process that registers the same weights under the same identity
    /// finds their packed form by look-up. Register before creating the
    /// runtime that uses them.
    pub fn register(&self, data: &[u8], name: Option<&str>) {
        // SAFETY: a slice is readable for its length.
        unsafe { self.register_raw(data.as_ptr(), data.len(), name) }
    }

    /// [`Core::register`] for a buffer known by its address (the C API's).
    ///
    /// # Safety
    /// `data` must point to `size` readable bytes (only read when `name` is `None`).
    pub unsafe fn register_raw(&self, data: *const u8, size: usize, name: Option<&str>) {
        // Hash outside the lock: it reads the whole buffer.
        // SAFETY: guaranteed by the caller.
        let identity = name.is_none().then(|| unsafe { content_identity(data, size) });
        let mut st = lock(&self.state);
        // The newest word on a piece of memory wins: records made before
        // this registration named whatever that memory held then.
        st.forget_memory(data as usize, size);
        st.registry.register(data as usize, size, name, || identity.expect("hashed above"));
    }

    /// Forgets `[data, data + size)`: its registration, aliases inside it, and
    /// look-up keys holding pointers into it. Call it before freeing weights
    /// you registered, or whenever memory that XNNPACK was given as weights
    /// is freed while the cache lives on. Packed entries stay (their bytes
    /// are still found by content and by persistent keys).
    pub fn unregister(&self, data: *const u8, size: usize) {
        lock(&self.state).forget_memory(data as usize, size);
    }

    /// Step 1: the offset of the one entry `key` names, or `NOT_FOUND`.
    pub fn look_up(&self, key: Key) -> usize {
        let mut st = lock(&self.state);
        let key = st.index_key(key);
        st.note_creating();
        st.stats.look_ups += 1;
        let me = std::thread::current().id();
        match st.index.look_up(&key) {
            Some(id) => {
                st.missed.remove(&me);
                let e = st.index.get_mut(id);
                e.used = true;
                let (offset, size) = (e.offset, e.size);
                st.stats.hits += 1;
                st.stats.found_bytes += size as u64;
                offset
            }
            None => {
                st.missed.insert(me);
                NOT_FOUND
            }
        }
    }

    /// Step 2: `n` writable bytes to pack into, or NULL if memory ran out.
    pub fn reserve(&self, n: usize) -> *mut u8 {
        let mut st = lock(&self.state);
        st.finalized = false;
        let me = std::thread::current().id();
        let packing_new = st.missed.remove(&me);
        if let Some(i) = st.pending.iter().position(|p| p.thread == me) {
            // The previous reservation of this thread was never inserted (an
            // error path in XNNPACK): reuse it if it is large enough.
            if st.pending[i].len >= n {
                return st.pending[i].addr;
            }
            let old = st.pending.swap_remove(i);
            st.give_back(old.offset, old.len);
        }
        // With a persistent file, weights a look-up just missed are packed
        // straight into it, and so is everything while this process builds
        // the file anyway (holds its writer lock and has grown the file: a
        // packing that folds gives its space back for the next). Otherwise (a launch that may write
        // nothing, e.g. paths XNNPACK never looks up) it is scratch until we
        // know, so that the file is not locked or grown for nothing.
        let building = !st.arena_full && st.store.as_ref().is_some_and(|s| s.is_locked()) && st.grown_past_commit();
        let in_arena = st.store.is_none() || building || (packing_new && st.may_write_file(self));
        let space = if in_arena { self.allocate(&mut st, n) } else { st.heap.alloc(n, ALIGNMENT) };
        match space {
            Some((offset, addr)) => {
                if !is_heap_offset(offset) {
                    // XNNPACK writes every byte of it (it zeroes the space
                    // before packing): fault it in with one call, not one
                    // fault per page.
                    // SAFETY: `n` bytes of fresh, writable arena space.
                    unsafe { crate::sys::prefault(addr, n) };
                }
                st.pending.push(Pending { offset, addr, len: n, thread: me });
                addr
            }
            None => core::ptr::null_mut(),
        }
    }

    /// Arena space if the arena can give it, heap space otherwise.
    fn allocate(&self, st: &mut State, n: usize) -> Option<(usize, *mut u8)> {
        if let (Some(arena), false) = (st.arena.as_mut(), st.arena_full) {
            match arena.alloc(n, ALIGNMENT) {
                Ok(offset) => return arena.addr(offset).map(|a| (offset, a)),
                Err(e) => {
                    let what = if arena.is_file_backed() { "the cache file" } else { "anonymous memory" };
                    st.arena_full = true;
                    self.fall_back("grow", Level::XNNCACHE_LOG_ERROR, format!("{what} cannot grow ({e}); further packed weights go to the heap"));
                }
            }
        }
        st.heap.alloc(n, ALIGNMENT)
    }

    /// Step 3: stores (or folds) the bytes XNNPACK packed at `ptr`, or with a
    /// NULL `ptr` answers like a look-up for `key` and `size`.
    pub fn look_up_or_insert(&self, key: Key, ptr: *const u8, size: usize) -> usize {
        let mut st = lock(&self.state);
        let key = st.index_key(key);
        st.note_creating();
        if ptr.is_null() {
            let id = st.index.look_up_sized(&key, size).or_else(|| st.index.look_up(&key));
            return id.map_or(NOT_FOUND, |id| st.index.get(id).offset);
        }
        let pending = match st.pending.iter().position(|p| std::ptr::eq(p.addr, ptr)) {
            Some(i) => st.pending.swap_remove(i),
            None => match st.adopt(self, ptr, size) {
                Ok(offset) => return offset,
                Err(p) => p,
            },
        };
        // XNNPACK never packs past what it reserved; if it claims to, trust
        // only the reserved bytes.
        let size = size.min(pending.len);
        // SAFETY: `pending.addr` is arena or heap memory of at least `size`
        // bytes, which XNNPACK has finished writing.
        let bytes = unsafe { core::slice::from_raw_parts(pending.addr, size) };
        let sample = crate::index::sample_of(bytes);
        st.stats.packed_bytes += size as u64;
        if is_heap_offset(pending.offset) && st.store.is_some() && !st.arena_full {
            // This packing may go to the file: take the writer lock first, so
            // that what other processes committed meanwhile is loaded and
            // found below, instead of being stored a second time.
            st.may_write_file(self);
        }
        st.sample_loaded();
        let State { index, arena, heap, .. } = &mut *st;
        let same = index.find_content(sample, size, |e| entry_bytes(arena.as_ref(), heap, e) == Some(bytes));
        if let Some(id) = same {
            st.link(key, id);
            st.index.get_mut(id).used = true;
            st.stats.duplicates_folded += 1;
            st.stats.folded_bytes += size as u64;
            st.give_back(pending.offset, pending.len);
            return st.index.get(id).offset;
        }
        let (offset, len) = st.place(self, &pending, size);
        let kept = size.div_ceil(ALIGNMENT) * ALIGNMENT;
        if is_heap_offset(offset) {
            st.stats.heap_fallback_bytes += size as u64;
        } else if kept < len {
            st.give_back(offset + kept, len - kept);
        }
        let persisted = matches!(key, IndexKey::Persistent(_)) && !is_heap_offset(offset) && st.store.is_some();
        if !persisted {
            st.stats.not_persisted += 1;
        }
        st.index.insert(key, Entry::new(offset, size, sample));
        if persisted {
            st.uncommitted += 1;
        }
        crate::fault::point("insert: entry stored");
        st.stats.entries += 1;
        st.stats.stored_bytes += size as u64;
        offset
    }

    /// Step 4: the address of an offset this cache returned, or NULL.
    pub fn offset_to_addr(&self, offset: usize) -> *mut u8 {
        let mut st = lock(&self.state);
        if !st.aliases.is_empty() {
            // XNNPACK asks at reshape, after creation: this thread's creation
            // is over, and its runtime may be deleted (with the copies its
            // aliases named) before the next one.
            st.end_creation(std::thread::current().id());
        }
        addr_of(st.arena.as_ref(), &st.heap, offset).unwrap_or_else(core::ptr::null_mut)
    }

    /// `alias_data`: a key naming `alias` means `original`, for as long as
    /// the copy at `alias` lives.
    ///
    /// XNNPACK calls this at the start of a runtime's creation, for fp32
    /// copies it made of fp16/bf16 constants; the copies are freed with the
    /// runtime, and their memory may then hold other weights. We cannot see
    /// that free, so an alias lasts only as long as the creation that made
    /// it can: until `finalize`, until the same thread reshapes a runtime
    /// (`offset_to_addr`, never called during creation) or starts another
    /// creation (its next `alias_data` after a look-up or a packing), or
    /// until memory covering `alias` is registered or unregistered. Only the
    /// thread that was told uses it (XNNPACK calls from the creating thread).
    pub fn alias(&self, alias: usize, original: usize) -> Result<()> {
        if alias == 0 || original == 0 {
            return Err(Error::invalid("alias_data: NULL pointer"));
        }
        let mut st = lock(&self.state);
        let me = std::thread::current().id();
        if st.creating.contains(&me) {
            // A new creation on this thread: the copies its earlier aliases
            // named may be gone with their runtime.
            st.end_creation(me);
        }
        // XNNPACK just allocated the copy: whatever was recorded about that
        // address before described memory that has been freed since.
        st.forget_memory(alias, 1);
        let original = st.resolve(original);
        if original == alias {
            return Ok(()); // aliasing a pointer to itself (or a cycle back to it) changes nothing
        }
        st.aliases.insert(alias, Alias { original, thread: me });
        Ok(())
    }

    /// The part of finalize that runs on the caller's thread: it ends the
    /// creations before it. Returns whether a write-back has anything to do.
    fn end_creations(&self) -> bool {
        let mut st = lock(&self.state);
        st.finalized = true;
        // XNNPACK's fp32 copies may be freed from here on (see `alias`).
        st.aliases.clear();
        st.creating.clear();
        // XNNPACK reserves and inserts within one creation call on one
        // thread: space this thread still holds was abandoned by an error
        // path. Give it back, so that it neither blocks the seal nor a commit.
        let me = std::thread::current().id();
        while let Some(i) = st.pending.iter().position(|p| p.thread == me) {
            let old = st.pending.swap_remove(i);
            st.give_back(old.offset, old.len);
        }
        // Staged pages to seal, entries to commit, or a writer lock to hand on.
        let staged = st.arena.as_ref().is_some_and(|a| a.unsealed() > 0);
        staged || st.uncommitted > 0 || st.store.as_ref().is_some_and(|s| s.is_locked() || s.generation() == 0)
    }

    fn has_store(&self) -> bool {
        lock(&self.state).store.is_some()
    }

    /// The write-back thread: one write-back per batch of finalize requests.
    fn write_back_loop(&self) {
        // Inference running meanwhile comes first (issue 10: steady speed
        // during the write-back).
        crate::sys::lower_thread_priority();
        let bg = &self.background;
        loop {
            let mut st = lock(&bg.state);
            while !st.requested && !st.stop {
                st = bg.changed.wait(st).unwrap_or_else(|e| e.into_inner());
            }
            if !st.requested {
                return; // closing, and nothing left to write
            }
            (st.requested, st.running) = (false, true);
            drop(st);
            let result = self.write_back();
            let mut st = lock(&bg.state);
            st.running = false;
            if let Err(e) = result {
                // Sticky: a failed write-back poisons the store, so nothing
                // this cache packs later reaches the file either.
                st.error = Some(e.message);
            }
            drop(st);
            bg.changed.notify_all();
        }
    }

    /// Hashes the bytes of new persistent entries for the file's index, with
    /// the state unlocked: runtimes created meanwhile are not held up.
    fn checksum_new_entries(&self) {
        let todo = lock(&self.state).unchecksummed();
        let sums: Vec<(EntryId, u64)> = todo
            .into_iter()
            // SAFETY: an arena entry's `size` bytes at its address are mapped
            // for as long as the cache lives and never change once inserted
            // (sealing swaps in identical file pages).
            .map(|(id, addr, size)| (id, xxhash_rust::xxh3::xxh3_64(unsafe { core::slice::from_raw_parts(addr as *const u8, size) })))
            .collect();
        let mut st = lock(&self.state);
        for (id, sum) in sums {
            st.index.get_mut(id).checksum.get_or_insert(sum);
        }
    }

    /// Writes back and write-protects every page packed so far, and commits
    /// new persistent entries to the file; returns whether it committed.
    /// Space still pending on another thread is left writable (and uncommitted).
    fn write_back(&self) -> Result<bool> {
        let _one_at_a_time = lock(&self.finalizing);
        self.checksum_new_entries();
        let (job, commit) = {
            let mut st = lock(&self.state);
            let commit = st.prepare_commit().map_err(|e| Error::io("cannot write the cache file's index", &e))?;
            let limit = st.pending.iter().filter(|p| !is_heap_offset(p.offset)).map(|p| p.offset).min();
            match st.arena.as_mut() {
                Some(arena) => (arena.begin_seal(limit.unwrap_or(usize::MAX)), commit),
                None => return Ok(false),
            }
        };
        let bytes = job.bytes() as u64;
        lock(&self.background.state).in_flight = bytes;
        let written = job.run();
        lock(&self.background.state).in_flight = 0;
        if let Err(e) = written {
            // The packed bytes stay valid in memory; but the file may now lack
            // some of them, so it must never be committed from here again.
            self.poison(&format!("cannot write the cache file ({e})"));
            return Err(Error::io("cannot write the cache file", &e));
        }
        let mut st = lock(&self.state);
        st.stats.sealed_bytes += bytes;
        let committed = commit.is_some();
        if let Some(commit) = commit {
            let store = st.store.as_mut().expect("a commit needs a store");
            if let Err(e) = store.publish(commit.index_offset, &commit.index, commit.data_end) {
                drop(st);
                // The other header slot still names the previous commit.
                self.poison(&format!("cannot commit the cache file ({e})"));
                return Err(Error::io("cannot commit the cache file", &e));
            }
            st.stats.commits += 1;
            // Only what this index holds is committed; weights inserted while
            // the pages were being written wait for the next commit.
            st.uncommitted -= commit.links;
            for &id in &commit.entries {
                st.index.get_mut(id).committed = true;
            }
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
            lock(&self.background.state).last_commit_unix_ms = now;
        }
        // Hand the file to other processes only when nothing of ours lies past
        // its newest commit: the next writer appends there.
        let in_use = st.pending.iter().any(|p| !is_heap_offset(p.offset)) || st.uncommitted > 0 || st.grown_past_commit();
        if !in_use {
            if let Some(store) = st.store.as_mut() {
                store.unlock();
            }
        }
        Ok(committed)
    }

    /// Stops persisting: the file may lack bytes an index would name.
    fn poison(&self, why: &str) {
        let mut st = lock(&self.state);
        if let Some(store) = st.store.as_mut() {
            store.poison();
        }
        self.fall_back("poison", Level::XNNCACHE_LOG_ERROR, format!("{why}; nothing more is persisted"));
    }

    /// True when a finalize came after the last packing.
    pub fn is_finalized(&self) -> bool {
        lock(&self.state).finalized
    }

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

    fn rewrite(&self, keep: Keep) -> Result<u64> {
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
    fn outside_percent(&self, keep: Keep) -> Option<u64> {
        let st = lock(&self.state);
        let store = st.store.as_ref().filter(|s| s.can_write())?;
        let (ids, keys) = st.live_links(keep);
        let live: u64 = ids.iter().map(|&id| st.index.get(id).size as u64).sum::<u64>() + format::DATA_START + 24 * (ids.len() + keys.len()) as u64;
        let len = store.file_len().max(1);
        Some(len.saturating_sub(live) * 100 / len)
    }

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
}

/// Which persistent entries a rewrite of the file keeps.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Keep {
    /// Those this session used (`compact`).
    Used,
    /// Every committed one: only space no one can reach is given back.
    Committed,
}

/// Space no entry reaches (unregistered weights, which are never looked up
/// again, old indexes) is given back at close once it is this share of the
/// file: without it, a host that registers nothing grows the file by its
/// packed bytes at every launch.
const RECLAIM_PERCENT: u64 = 50;
/// ... and at least this many bytes, so small files are not rewritten for little.
const RECLAIM_MIN_BYTES: u64 = 4 << 20;

impl Core {
    /// Whether close should give space back: only after this cache wrote to
    /// the file (a launch that adds nothing never touches it), and only when
    /// unreachable space is at least `RECLAIM_PERCENT` of a file over
    /// `RECLAIM_MIN_BYTES`.
    fn wrote_and_left_garbage(&self) -> bool {
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
    /// Follows this thread's `alias_data` links to the pointer the data was
    /// first known by. A registered pointer is never followed: registering
    /// memory says what it holds now, whatever an alias said before.
    fn resolve(&self, mut p: usize) -> usize {
        let me = std::thread::current().id();
        // Bounded: a cycle cannot form (see `alias`), but never loop forever.
        for _ in 0..=self.aliases.len() {
            if self.registry.resolve(p).is_some() {
                break;
            }
            match self.aliases.get(&p) {
                Some(a) if a.thread == me => p = a.original,
                _ => break,
            }
        }
        p
    }

    /// `thread`'s creation is over: the copies its aliases named may be freed.
    fn end_creation(&mut self, thread: ThreadId) {
        self.aliases.retain(|_, a| a.thread != thread);
        self.creating.remove(&thread);
    }

    /// Records that this thread is inside a creation (see [`Cache::alias`]).
    fn note_creating(&mut self) {
        if !self.aliases.is_empty() {
            self.creating.insert(std::thread::current().id());
        }
    }

    /// Forgets every pointer-keyed record about `[start, start + size)`: the
    /// registration, aliases whose copy lies there, and in-process look-up
    /// keys holding pointers into it.
    fn forget_memory(&mut self, start: usize, size: usize) {
        let end = start.saturating_add(size.max(1));
        self.registry.forget(start, end);
        let aliased: Vec<usize> = self.aliases.range(start..end).map(|(&a, _)| a).collect();
        for a in aliased {
            self.aliases.remove(&a);
        }
        self.index.forget_pointers(start, end);
    }

    /// The key the index uses: persistent when the pointers are registered.
    fn index_key(&self, key: Key) -> IndexKey {
        let key = if self.aliases.is_empty() { key } else { Key { kernel: self.resolve(key.kernel), bias: self.resolve(key.bias), ..key } };
        match self.registry.persistent(&key) {
            Some(p) => IndexKey::Persistent(p),
            None => IndexKey::Process(key),
        }
    }

    fn link(&mut self, key: IndexKey, id: EntryId) {
        let new = self.index.link(key, id);
        if new && matches!(key, IndexKey::Persistent(_)) && !is_heap_offset(self.index.get(id).offset) && self.store.is_some() {
            self.uncommitted += 1;
        }
    }

    /// Loads a committed index: every payload becomes an entry at its offset.
    fn load(&mut self, committed: &format::Index) {
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
    fn grown_past_commit(&self) -> bool {
        match (&self.store, &self.arena) {
            (Some(store), Some(arena)) => arena.used_past(store.committed_end().max(format::DATA_START)),
            _ => false,
        }
    }

    /// Takes the samples of the entries loaded from the file, so that a new
    /// packing can be folded into them: once, at the first packing of the
    /// session (a launch that only looks up never reads their bytes).
    fn sample_loaded(&mut self) {
        for id in self.index.take_unsampled() {
            let e = *self.index.get(id);
            if let Some(bytes) = entry_bytes(self.arena.as_ref(), &self.heap, &e) {
                let sample = crate::index::sample_of(bytes);
                self.index.set_sample(id, sample);
            }
        }
    }

    /// New entries a commit will name, whose checksums are not taken yet:
    /// their ids, addresses and sizes.
    fn unchecksummed(&self) -> Vec<(EntryId, usize, usize)> {
        if self.store.is_none() {
            return Vec::new(); // nothing is committed without a file
        }
        let mut ids: Vec<EntryId> = self.index.persistent_links().map(|(_, id)| id).collect();
        ids.sort_unstable();
        ids.dedup();
        ids.into_iter()
            .filter_map(|id| {
                let e = self.index.get(id);
                let addr = (e.checksum.is_none() && !is_heap_offset(e.offset)).then(|| addr_of(self.arena.as_ref(), &self.heap, e.offset)).flatten()?;
                Some((id, addr as usize, e.size))
            })
            .collect()
    }

    fn same_bytes(&self, a: &Entry, b: &Entry) -> bool {
        if a.size != b.size || matches!((a.checksum, b.checksum), (Some(x), Some(y)) if x != y) {
            return false;
        }
        let bytes = |e| entry_bytes(self.arena.as_ref(), &self.heap, e);
        matches!((bytes(a), bytes(b)), (Some(x), Some(y)) if x == y)
    }

    /// Takes the writer lock if it is free and adopts what other processes
    /// committed meanwhile. False: another process holds it.
    fn lock_and_follow(&mut self) -> std::io::Result<bool> {
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
            self.load(&index);
        }
        if let Some(arena) = self.arena.as_mut() {
            // Another process may have trimmed the file below our slack.
            let _ = arena.forget_beyond(self.store.as_ref().expect("checked").file_len());
        }
        Ok(true)
    }

    /// Whether new weights may go into the file now: takes the writer lock
    /// if needed, and adopts what other processes committed meanwhile.
    fn may_write_file(&mut self, cache: &Core) -> bool {
        match self.lock_and_follow() {
            Ok(true) => true,
            Ok(false) => {
                let why = "another process holds the cache file's writer lock: new weights of this session stay in memory";
                cache.log_once("busy", Level::XNNCACHE_LOG_WARN, why);
                false
            }
            Err(e) => {
                cache.fall_back("lock", Level::XNNCACHE_LOG_ERROR, format!("cannot lock or follow the cache file: {e}"));
                false
            }
        }
    }

    /// Where a new entry's bytes live: its reservation, or, for heap scratch
    /// when the file can take it, a copy in the file.
    fn place(&mut self, cache: &Core, pending: &Pending, size: usize) -> (usize, usize) {
        if is_heap_offset(pending.offset) && self.store.is_some() && !self.arena_full && self.may_write_file(cache) {
            if let Some((offset, addr)) = cache.allocate(self, size).filter(|(o, _)| !is_heap_offset(*o)) {
                // SAFETY: two distinct allocations of at least `size` bytes.
                unsafe { core::ptr::copy_nonoverlapping(pending.addr, addr, size) };
                self.heap.free(pending.offset);
                return (offset, size);
            }
        }
        (pending.offset, pending.len)
    }

    /// Under the writer lock: writes the index of the next commit at the end
    /// of the file's used space. A commit is due with new persistent entries,
    /// for a new file, and whenever we used file space past the last commit
    /// (even for unregistered weights): once the lock is released, the next
    /// writer appends after `data_end`, so everything we still use must lie
    /// below it. Not while another thread is packing into the file: its space
    /// lies below the index and could not be sealed with it.
    fn prepare_commit(&mut self) -> std::io::Result<Option<Commit>> {
        let (Some(store), Some(_)) = (self.store.as_ref(), self.arena.as_ref()) else { return Ok(None) };
        let grown = self.grown_past_commit();
        let packing = self.pending.iter().any(|p| !is_heap_offset(p.offset));
        if !store.is_locked() || packing || (self.uncommitted == 0 && store.generation() > 0 && !grown) {
            return Ok(None);
        }
        let mut index = format::Index::default();
        let mut position: HashMap<EntryId, u32> = HashMap::new();
        let mut links: Vec<(u128, EntryId)> = self.index.persistent_links().collect();
        links.sort_unstable();
        let mut entries = Vec::new();
        for (key, id) in links {
            let e = *self.index.get(id);
            if is_heap_offset(e.offset) {
                continue;
            }
            // Normally taken by `checksum_new_entries` outside the lock; an
            // entry inserted since then is hashed here.
            let checksum = match e.checksum {
                Some(c) => c,
                None => {
                    let c = xxhash_rust::xxh3::xxh3_64(entry_bytes(self.arena.as_ref(), &self.heap, &e).expect("entries resolve"));
                    self.index.get_mut(id).checksum = Some(c);
                    c
                }
            };
            let next = index.payloads.len() as u32;
            let pos = *position.entry(id).or_insert_with(|| {
                index.payloads.push(format::Payload { offset: e.offset as u64, size: e.size as u64, checksum });
                entries.push(id);
                next
            });
            index.keys.push(format::KeyRef { key, payload: pos });
        }
        let bytes = index.encode();
        let arena = self.arena.as_mut().expect("a store has an arena");
        let offset = arena.alloc_at_end(bytes.len(), ALIGNMENT).map_err(|e| std::io::Error::other(e.to_string()))?;
        let addr = arena.addr(offset).expect("just allocated");
        // SAFETY: fresh, writable arena space of `bytes.len()` bytes.
        unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), addr, bytes.len()) };
        let data_end = (offset + bytes.len()) as u64;
        crate::fault::point("commit: index written through the mapping");
        Ok(Some(Commit { index_offset: offset as u64, index: bytes, data_end, entries, links: self.uncommitted }))
    }

    /// The file entries this session used that persistent keys reach, and
    /// those keys (with the entry's position in the first list).
    fn live_links(&self, keep: Keep) -> (Vec<EntryId>, Vec<(u128, u32)>) {
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

    fn give_back(&mut self, offset: usize, len: usize) {
        if is_heap_offset(offset) {
            self.heap.free(offset);
        } else if let Some(arena) = self.arena.as_mut() {
            arena.free(offset, len);
        }
    }

    /// `look_up_or_insert` with a pointer we never handed out. If it is an
    /// entry's own address, that entry is the answer; otherwise the bytes are
    /// copied into fresh space and inserted like any packing.
    fn adopt(&mut self, cache: &Core, ptr: *const u8, size: usize) -> std::result::Result<usize, Pending> {
        let known = self.arena.as_ref().and_then(|a| a.offset_of(ptr)).or_else(|| self.heap.offset_of(ptr));
        if let Some(id) = known.and_then(|off| self.index.find_offset(off)) {
            return Ok(self.index.get(id).offset);
        }
        let space = if self.store.is_some() { self.heap.alloc(size, ALIGNMENT) } else { cache.allocate(self, size) };
        match space {
            Some((offset, addr)) => {
                // SAFETY: XNNPACK passes `size` readable bytes at `ptr`; `addr` is
                // fresh space of `size` bytes that cannot overlap them.
                unsafe { core::ptr::copy_nonoverlapping(ptr, addr, size) };
                Err(Pending { offset, addr, len: size, thread: std::thread::current().id() })
            }
            None => Ok(NOT_FOUND),
        }
    }
}

/// The bytes of an entry.
fn entry_bytes<'a>(arena: Option<&'a Arena>, heap: &'a Heap, e: &Entry) -> Option<&'a [u8]> {
    // SAFETY: an entry's offset resolves to `e.size` readable bytes, which
    // neither move nor change while the arena or heap that holds them lives.
    addr_of(arena, heap, e.offset).map(|a| unsafe { core::slice::from_raw_parts(a as *const u8, e.size) })
}

fn addr_of(arena: Option<&Arena>, heap: &Heap, offset: usize) -> Option<*mut u8> {
    if is_heap_offset(offset) {
        heap.addr(offset)
    } else {
        arena?.addr(offset)
    }
}
