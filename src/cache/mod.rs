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
//! Steps 1 to 4 run under the state lock, which guards memory only; the
//! write-back of step 5 (checksums, writing pages, syncs, the header, the
//! rename) runs outside it, on pages nobody writes any more. See [`Core`] for
//! the locks and their order.
//!
//! Where each part lives:
//! - this file: the public types ([`Cache`], [`CacheOptions`], [`Stats`]) and
//!   finalize/wait, which hand work to the write-back thread;
//! - `open`: opening the file (or memory) and loading its committed index;
//! - `packing`: steps 1 to 4, what XNNPACK's callbacks do;
//! - `aliases`: `alias_data` records and how long they last;
//! - `state`: [`State`], what the mutex guards, and its shared helpers;
//! - `writeback`: step 5 in the background: checksums, seal, commit;
//! - `compaction`: verify, compact, and the space given back at close;
//! - `programs`: what each finalize's runtimes used, for the retention rule
//!   (`crate::retention`) that commits apply;
//! - `prefetch`: a warm launch brings the file's payloads in meanwhile;
//! - `lifetime`: `fork()` and `exit()`: what a child may do with its parent's
//!   caches, and the write-backs a normal exit finishes;
//! - `report`: stats and the fallback messages sent to the host.

mod aliases;
mod compaction;
mod lifetime;
mod open;
mod packing;
mod prefetch;
mod programs;
mod report;
mod state;
mod writeback;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::abi::Generation;
use crate::error::{Error, Result, Status};
use crate::store::Source;

use state::State;
use writeback::Background;

/// A thread's number in this process: never reused, and readable at any
/// time. `std::thread::current()` panics once the thread's Rust thread-local
/// data is destroyed, which a host reaches by calling xnncache from its own
/// thread-local destructors (a `thread_local` object holding a runtime or a
/// cache); this never does (RELIABILITY.md#the-app-build-aborts-on-a-panic).
pub(crate) type ThreadNo = u64;

// `NUMBER` is `const`-initialised; clippy of Debian's 1.96 says otherwise on
// targets whose thread-locals are pthread keys (Android, windows-gnu).
#[allow(clippy::missing_const_for_thread_local)]
pub(crate) fn this_thread() -> ThreadNo {
    use std::cell::Cell;
    static NEXT: AtomicU64 = AtomicU64::new(1);
    thread_local! {
        // Constant and without a destructor: nothing to be destroyed, so
        // reading it cannot fail (with the pthread-key storage of Android,
        // it is only set up again, and the thread gets a new number).
        static NUMBER: Cell<u64> = const { Cell::new(0) };
    }
    NUMBER.with(|n| {
        if n.get() == 0 {
            n.set(NEXT.fetch_add(1, Ordering::Relaxed));
        }
        n.get()
    })
}

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
    /// Packed weights this cache's commits left out of the file (an update
    /// replaced their program, or the size cap dropped it), and their bytes.
    pub dropped_entries: u64,
    pub dropped_bytes: u64,
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
    /// Bring a reused file's payloads into memory in the background at open.
    pub prefetch: bool,
    /// Let the background write-back wait while the process computes (see
    /// `writeback::YIELD_AT_MOST`); false: it starts as soon as asked.
    pub yield_writeback: bool,
    /// Packed bytes past which a commit drops whole programs, least recently
    /// written first (see [`crate::retention`]); 0: no cap.
    pub size_cap: u64,
    /// The label of the programs this cache creates (see [`Core::set_program`]).
    pub program: Option<String>,
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
            prefetch: true,
            yield_writeback: true,
            size_cap: 0,
            program: None,
        }
    }

    pub fn file(path: impl Into<PathBuf>, generation: Generation) -> CacheOptions {
        CacheOptions { source: Some(Source::Path(path.into())), ..CacheOptions::memory(generation) }
    }
}

/// A weights cache. The packing state lives in a [`Core`] shared with the
/// background writer thread, which writes packed pages back to the file and
/// commits them after [`Cache::finalize`] has returned.
pub struct Cache {
    core: Arc<Core>,
    /// The write-back thread, started by the first finalize that needs it.
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// A warm launch's prefetch of the file's payloads, while it runs.
    prefetch: Mutex<Option<prefetch::Prefetch>>,
}

/// Everything a cache holds; methods that answer XNNPACK are here.
///
/// # Locks
///
/// Taken in this order, never the other way round (a lock may be skipped):
///
/// 1. `finalizing`: one write-back or rewrite of the file at a time. Held
///    across their I/O (that is what it is for), and while a background
///    write-back yields to the host's computation, which a rewrite ends
///    before taking it; nothing else waits on it.
/// 2. `state`: the index, the arena's bookkeeping, pending space. Only memory
///    work runs under it, and the writer lock's non-blocking `flock` (with the
///    read of what another process committed) while a runtime is being created:
///    never a sync, a whole-file pass, a page-fault storm or host code.
///    [`Core::locked`] releases it before sending queued log messages.
/// 3. `background.state`, then `fallback_reason`, `logged`: a few fields each,
///    held for an assignment.
///
/// [`Cache`]'s `writer` (the write-back thread's handle) is held only to start
/// or recognise that thread, before `background.state` when both are; its
/// `prefetch` only to take the prefetch's handle or signal (a wait for the
/// prefetch holds no lock). The prefetch thread takes none of them: the
/// opening thread found the mapping for it.
///
/// The log callback runs with none of them held, so it may call any function
/// of the C API, on this cache too.
///
/// Around a `fork()`, the forking thread takes the handle table, the list of
/// caches, then for each open cache 2 and 3 in this order, then the exit
/// list and the log callback's lock (`lifetime::at_fork_prepare`); none of
/// them is held while another of those is waited for out of that order, and
/// none while host code runs, so the child finds them all free. `finalizing`
/// is never taken there: a forked child never writes back.
pub struct Core {
    generation: Generation,
    path: Option<PathBuf>,
    compact_percent: u32,
    /// Write back on the finalizing thread instead of in the background.
    sync_writeback: bool,
    /// The background write-back yields to the host's computation.
    yield_writeback: bool,
    /// Serialises write-backs and compaction, whose I/O runs outside `state`.
    finalizing: Mutex<()>,
    /// Take it through [`Core::locked`].
    state: Mutex<State>,
    background: Background,
    /// Why the file is not (or no longer) used, for stats and messages.
    fallback_reason: Mutex<Option<String>>,
    /// Kinds of fallback already logged (each is logged once per cache).
    logged: Mutex<Vec<&'static str>>,
    /// The fork generation of the process that opened the cache: in a
    /// child of `fork()`, the cache is its parent's (see `lifetime`).
    born: u64,
    /// The write-back thread (`sys::thread_id`), 0 before it starts: the
    /// exit handler never waits for the thread it runs on.
    write_back_thread: AtomicU64,
    /// The thread holding `state`, and the one holding `finalizing` (0:
    /// none): the exit handler never waits for a write-back that needs a lock
    /// held by the exiting thread (`exit()` from a signal handler).
    state_holder: AtomicU64,
    finalizing_holder: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic under the lock is caught at the C boundary; the state it left is
    // still consistent enough to answer (entries are only ever added).
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Cache {
    pub fn open(options: &CacheOptions) -> Result<Cache> {
        let core = Arc::new(Core::open(options)?);
        lifetime::register(&core);
        let prefetch = if options.prefetch { prefetch::Prefetch::start(&core) } else { None };
        Ok(Cache { core, writer: Mutex::new(None), prefetch: Mutex::new(prefetch) })
    }

    /// Step 5: every page packed so far becomes clean and read-only and new
    /// persistent entries are committed, in the background: the runtime can
    /// run as soon as this returns (its packed weights are already in place,
    /// in memory that the write-back later swaps for the file's pages).
    /// [`Cache::wait`] waits for it. With `sync_writeback`, or without a
    /// file, the work is done before returning, and its error returned.
    pub fn finalize(&self) -> Result<()> {
        let core = &self.core;
        if core.forked() {
            // A child of fork(): the cache is its parent's (see `lifetime`).
            core.finalize_in_child();
            return Ok(());
        }
        if !core.end_creations() {
            return Ok(()); // nothing new since the last write-back (a warm launch)
        }
        if core.sync_writeback || !core.has_store() {
            return core.write_back(&mut || {}).map(|_| ());
        }
        {
            let mut st = lock(&core.background.state);
            st.requested = true;
            st.requested_at.get_or_insert_with(std::time::Instant::now);
        }
        core.background.changed.notify_all();
        let mut writer = lock(&self.writer);
        if writer.is_none() {
            let shared = Arc::clone(core);
            let run = move || {
                if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| shared.write_back_loop())).is_err() {
                    shared.write_back_thread_died();
                }
            };
            match std::thread::Builder::new().name("xnncache-writeback".into()).spawn(run) {
                Ok(handle) => {
                    *writer = Some(handle);
                    lifetime::finish_at_exit(core);
                }
                Err(_) => {
                    // No thread to be had: do the work here, as requested.
                    lock(&core.background.state).requested = false;
                    return core.write_back(&mut || {}).map(|_| ());
                }
            }
        }
        Ok(())
    }

    /// Waits until the cache's background work is done: a warm launch's
    /// prefetch, and the write-back and commit of every finalize so far; at
    /// most `timeout` (`None`: as long as it takes). `XNNCACHE_BUSY` when
    /// the time ran out; `XNNCACHE_IO_ERROR` when the last write-back failed
    /// (the runtime keeps its weights in memory, the file its last commit).
    /// Any timeout but zero first ends the write-back's yielding, whatever
    /// the prefetch does. In a child of `fork()` it returns at once: no
    /// write-back of this process goes through a cache opened before the fork.
    pub fn wait(&self, timeout: Option<std::time::Duration>) -> Result<()> {
        if self.core.forked() {
            return Ok(());
        }
        if self.core.write_back_thread.load(Ordering::Relaxed) == crate::sys::thread_id() {
            // A log callback on the write-back thread: it would wait for itself.
            return Err(Error::new(Status::XNNCACHE_BUSY, "called on the write-back thread (from a log callback), which cannot wait for itself"));
        }
        let deadline = timeout.map(|t| std::time::Instant::now() + t);
        if timeout != Some(std::time::Duration::ZERO) {
            // Someone waits: the write-back stops yielding to the host's
            // computation, before and whatever the wait for the prefetch.
            self.core.hurry_write_back();
        }
        let prefetch = lock(&self.prefetch).as_ref().map(prefetch::Prefetch::done);
        if prefetch.is_some_and(|done| !prefetch::wait(&done, deadline)) {
            return Err(Error::new(Status::XNNCACHE_BUSY, "the prefetch of the file's packed weights is still running"));
        }
        let st = self
            .core
            .write_back_done(deadline)
            .ok_or_else(|| Error::new(Status::XNNCACHE_BUSY, "the write-back of packed weights is still running"))?;
        match &st.error {
            Some(e) => Err(e.clone()),
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
        if self.core.forked() {
            // A child of fork(): the parent's threads are not here, nor joined
            // (their handles are dropped, which detaches them); the `Core`
            // leaves the file alone (see `lifetime`).
            return;
        }
        if let Some(p) = lock(&self.prefetch).take() {
            p.stop();
        }
        lock(&self.core.background.state).stop = true;
        self.core.background.changed.notify_all();
        let writer = lock(&self.writer).take();
        // Not from the write-back thread itself (a log callback there that
        // closes the cache): that thread ends on its own once it returns.
        if let Some(handle) = writer.filter(|_| self.core.write_back_thread.load(Ordering::Relaxed) != crate::sys::thread_id()) {
            let _ = handle.join();
        }
    }
}

impl Core {
    pub fn generation(&self) -> Generation {
        self.generation
    }

    /// Labels the programs whose runtimes are created from now on (each
    /// finalize ends one): a program with the label of a recorded one is an
    /// update of it, whatever its shape, and one with another label never
    /// is (see [`crate::retention`]). `None`: unlabelled, told apart by shape.
    pub fn set_program(&self, label: Option<&str>) {
        self.locked().programs.label = label.map_or(0, crate::retention::label);
    }

    /// Locks the state; messages queued under it are sent once it is released.
    fn locked(&self) -> state::Locked<'_> {
        let mut st = state::Locked::new(self, &self.state);
        if st.generation != lifetime::fork_generation() {
            // A child of fork() (if the fork handler did not see this cache).
            st.leave_to_parent();
        }
        st
    }
}

