//! The cache: what each provider callback does, in safe Rust.
//!
//! The life of one packed weight:
//!
//! 1. `look_up(key)`: the index answers with an offset, or "not found".
//! 2. `reserve(n)`: on a miss, XNNPACK asks for `n` bytes to pack into. They
//!    come from the arena (file or anonymous pages), or from the heap when the
//!    file cannot grow. The space is *pending* until step 3; a second reserve on
//!    the same thread supersedes it and reuses its space.
//! 3. `look_up_or_insert(key, ptr, n)`: XNNPACK has packed into `ptr`. If the
//!    same bytes are already stored (under any key), the new copy is folded into
//!    the old one and its space given back; otherwise the pending space becomes
//!    an entry. Either way the returned offset is one `offset_to_addr` resolves.
//! 4. `offset_to_addr(offset)`: at every reshape; addresses never move.
//! 5. `finalize()`: everything inserted so far is written back and made
//!    read-only, so its pages are clean and can be dropped under pressure.
//!
//! All of it runs under one mutex; only the write-back in `finalize` runs
//! outside it, on pages nobody writes any more.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::thread::ThreadId;

use crate::abi::{Generation, Key, NOT_FOUND};
use crate::arena::{Arena, ArenaOptions};
use crate::error::{Error, Result, Status};
use crate::heap::{is_heap_offset, Heap};
use crate::index::{Entry, Index};

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
    /// Where new entries go now (an `xnncache_backing` value).
    pub backing: u32,
    /// The provider ABI generation the caller compiled against (1, 2 or 3).
    pub abi_generation: u32,
}

/// How to open a cache.
#[derive(Clone, Debug)]
pub struct CacheOptions {
    pub path: Option<PathBuf>,
    pub generation: Generation,
    /// Fail instead of falling back to the heap when the file is unusable.
    pub require_file: bool,
    /// Address space to reserve for the first arena segment.
    pub reservation: Option<usize>,
}

impl CacheOptions {
    pub fn memory(generation: Generation) -> CacheOptions {
        CacheOptions { path: None, generation, require_file: false, reservation: None }
    }

    pub fn file(path: impl Into<PathBuf>, generation: Generation) -> CacheOptions {
        CacheOptions { path: Some(path.into()), ..CacheOptions::memory(generation) }
    }
}

/// Space handed out by `reserve` and not yet inserted.
struct Pending {
    offset: usize,
    addr: *mut u8,
    len: usize,
    thread: ThreadId,
}

struct State {
    /// `None` when the file could not be used at all: everything goes to the heap.
    arena: Option<Arena>,
    heap: Heap,
    index: Index,
    pending: Vec<Pending>,
    /// `alias_data(alias, original)`: keys naming `alias` mean `original`.
    aliases: HashMap<usize, usize>,
    /// Set once the arena's file refused to grow; later space comes from the heap.
    arena_full: bool,
    stats: Stats,
}

// SAFETY: the raw pointers in `pending` name memory owned by the arena or the
// heap in the same struct; the state is only touched under the cache's mutex.
unsafe impl Send for State {}

pub struct Cache {
    generation: Generation,
    path: Option<PathBuf>,
    state: Mutex<State>,
    /// Serialises `finalize`, whose write-back runs outside `state`'s lock.
    finalizing: Mutex<()>,
    /// Why the file is not (or no longer) used, for stats and messages.
    fallback_reason: Mutex<Option<String>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic under the lock is caught at the C boundary; the state it left is
    // still consistent enough to answer (entries are only ever added).
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Cache {
    pub fn open(options: &CacheOptions) -> Result<Cache> {
        let arena_options = match options.reservation {
            Some(r) => ArenaOptions::new().reservation(r),
            None => ArenaOptions::new(),
        };
        let mut fallback = None;
        let arena = match &options.path {
            None => Some(arena_options.anonymous().map_err(|e| {
                Error::new(Status::XNNCACHE_OUT_OF_MEMORY, format!("cannot reserve address space: {e}"))
            })?),
            Some(path) => match create_file(path).and_then(|f| arena_options.file(f)) {
                Ok(arena) => Some(arena),
                Err(e) if options.require_file => return Err(Error::io(format!("cannot use {}", path.display()), &e)),
                Err(e) => {
                    fallback = Some(format!("cannot use {}: {e}; packed weights go to the heap", path.display()));
                    None
                }
            },
        };
        Ok(Cache {
            generation: options.generation,
            path: options.path.clone(),
            state: Mutex::new(State {
                arena,
                heap: Heap::default(),
                index: Index::default(),
                pending: Vec::new(),
                aliases: HashMap::new(),
                arena_full: false,
                stats: Stats::default(),
            }),
            finalizing: Mutex::new(()),
            fallback_reason: Mutex::new(fallback),
        })
    }

    pub fn generation(&self) -> Generation {
        self.generation
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    pub fn fallback_reason(&self) -> Option<String> {
        lock(&self.fallback_reason).clone()
    }

    /// Step 1: the offset of the one entry `key` names, or `NOT_FOUND`.
    pub fn look_up(&self, key: Key) -> usize {
        let mut st = lock(&self.state);
        let key = st.canonical(key);
        st.stats.look_ups += 1;
        match st.index.look_up(&key) {
            Some(id) => {
                let e = *st.index.get(id);
                st.stats.hits += 1;
                st.stats.found_bytes += e.size as u64;
                e.offset
            }
            None => NOT_FOUND,
        }
    }

    /// Step 2: `n` writable bytes to pack into, or NULL if memory ran out.
    pub fn reserve(&self, n: usize) -> *mut u8 {
        let mut st = lock(&self.state);
        let me = std::thread::current().id();
        if let Some(i) = st.pending.iter().position(|p| p.thread == me) {
            // The previous reservation of this thread was never inserted (an
            // error path in XNNPACK): reuse it if it is large enough.
            if st.pending[i].len >= n {
                return st.pending[i].addr;
            }
            let old = st.pending.swap_remove(i);
            st.give_back(old.offset, old.len);
        }
        match self.allocate(&mut st, n) {
            Some((offset, addr)) => {
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
                    *lock(&self.fallback_reason) = Some(format!("{what} cannot grow ({e}); further packed weights go to the heap"));
                }
            }
        }
        st.heap.alloc(n, ALIGNMENT)
    }

    /// Step 3: stores (or folds) the bytes XNNPACK packed at `ptr`, or with a
    /// NULL `ptr` answers like a look-up for `key` and `size`.
    pub fn look_up_or_insert(&self, key: Key, ptr: *const u8, size: usize) -> usize {
        let mut st = lock(&self.state);
        let key = st.canonical(key);
        if ptr.is_null() {
            let id = st.index.look_up_sized(&key, size).or_else(|| st.index.look_up(&key));
            return id.map_or(NOT_FOUND, |id| st.index.get(id).offset);
        }
        let pending = match st.pending.iter().position(|p| p.addr as *const u8 == ptr) {
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
        let hash = xxhash_rust::xxh3::xxh3_64(bytes);
        st.stats.packed_bytes += size as u64;
        let State { index, arena, heap, .. } = &mut *st;
        let same = index.find_content(hash, size, |e| {
            let stored = addr_of(arena.as_ref(), heap, e.offset);
            // SAFETY: every entry's offset resolves to `e.size` readable bytes.
            stored.is_some_and(|a| unsafe { core::slice::from_raw_parts(a, e.size) } == bytes)
        });
        if let Some(id) = same {
            st.index.link(key, id);
            st.stats.duplicates_folded += 1;
            st.stats.folded_bytes += size as u64;
            st.give_back(pending.offset, pending.len);
            return st.index.get(id).offset;
        }
        // Keep the reservation as the entry; give back what packing did not use.
        let kept = size.div_ceil(ALIGNMENT) * ALIGNMENT;
        if is_heap_offset(pending.offset) {
            st.stats.heap_fallback_bytes += size as u64;
        } else if kept < pending.len {
            st.give_back(pending.offset + kept, pending.len - kept);
        }
        st.index.insert(key, Entry { offset: pending.offset, size, hash });
        st.stats.entries += 1;
        st.stats.stored_bytes += size as u64;
        pending.offset
    }

    /// Step 4: the address of an offset this cache returned, or NULL.
    pub fn offset_to_addr(&self, offset: usize) -> *mut u8 {
        let st = lock(&self.state);
        addr_of(st.arena.as_ref(), &st.heap, offset).unwrap_or(core::ptr::null_mut())
    }

    /// `alias_data`: from now on a key naming `alias` means `original`.
    pub fn alias(&self, alias: usize, original: usize) -> Result<()> {
        if alias == 0 || original == 0 {
            return Err(Error::invalid("alias_data: NULL pointer"));
        }
        let mut st = lock(&self.state);
        let original = st.resolve(original);
        if original == alias {
            return Ok(()); // aliasing a pointer to itself (or a cycle back to it) changes nothing
        }
        st.aliases.insert(alias, original);
        Ok(())
    }

    /// Step 5: writes back and write-protects every page packed since the last
    /// finalize. Space still pending on another thread is left writable.
    pub fn finalize(&self) -> Result<()> {
        let _one_at_a_time = lock(&self.finalizing);
        let job = {
            let mut st = lock(&self.state);
            let limit = st.pending.iter().filter(|p| !is_heap_offset(p.offset)).map(|p| p.offset).min();
            match st.arena.as_mut() {
                Some(arena) => arena.begin_seal(limit.unwrap_or(usize::MAX)),
                None => return Ok(()),
            }
        };
        let bytes = job.bytes() as u64;
        job.run().map_err(|e| Error::io("cannot write the cache file back", &e))?;
        lock(&self.state).stats.sealed_bytes += bytes;
        Ok(())
    }

    /// True when every stored entry is in sealed (clean, read-only) pages.
    pub fn is_sealed(&self) -> bool {
        let st = lock(&self.state);
        st.pending.is_empty() && st.arena.as_ref().map_or(true, |a| a.used() <= a.sealed())
    }

    pub fn stats(&self) -> Stats {
        let st = lock(&self.state);
        let mut s = st.stats;
        s.file_size = st.arena.as_ref().filter(|a| a.is_file_backed()).map_or(0, |a| a.len() as u64);
        s.backing = match (&st.arena, st.arena_full) {
            (Some(a), false) if a.is_file_backed() => Backing::XNNCACHE_BACKING_FILE,
            (Some(_), false) if self.path.is_none() => Backing::XNNCACHE_BACKING_MEMORY,
            _ => Backing::XNNCACHE_BACKING_HEAP,
        } as u32;
        s.abi_generation = match self.generation {
            Generation::V1 => 1,
            Generation::V2 => 2,
            Generation::V3 => 3,
        };
        s
    }
}

impl State {
    /// Follows `alias_data` links to the pointer the data was first known by.
    fn resolve(&self, mut p: usize) -> usize {
        // Bounded: a cycle cannot form (see `alias`), but never loop forever.
        for _ in 0..=self.aliases.len() {
            match self.aliases.get(&p) {
                Some(&q) => p = q,
                None => break,
            }
        }
        p
    }

    fn canonical(&self, key: Key) -> Key {
        if self.aliases.is_empty() {
            return key;
        }
        Key { kernel: self.resolve(key.kernel), bias: self.resolve(key.bias), ..key }
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
    fn adopt(&mut self, cache: &Cache, ptr: *const u8, size: usize) -> std::result::Result<usize, Pending> {
        let known = self.arena.as_ref().and_then(|a| a.offset_of(ptr)).or_else(|| self.heap.offset_of(ptr));
        if let Some(entry) = known.and_then(|off| self.index.entries().iter().find(|e| e.offset == off)) {
            return Ok(entry.offset);
        }
        match cache.allocate(self, size) {
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

fn addr_of(arena: Option<&Arena>, heap: &Heap, offset: usize) -> Option<*mut u8> {
    if is_heap_offset(offset) {
        heap.addr(offset)
    } else {
        arena?.addr(offset)
    }
}

/// Creates a new, empty cache file at `path`, replacing any old one atomically:
/// the old file is never truncated, because another process may have it mapped.
fn create_file(path: &Path) -> io::Result<File> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = path.file_name().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the path names no file"))?;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut tmp_name = OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".{}.{}.tmp", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed)));
    let tmp = dir.join(&tmp_name);
    let file = OpenOptions::new().read(true).write(true).create_new(true).mode(0o644).custom_flags(libc::O_CLOEXEC).open(&tmp)?;
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(file)
}
