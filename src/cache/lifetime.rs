//! A cache across the life of its process: `fork()` and `exit()`.
//!
//! **fork.** A child process has only the thread that forked: a parent's
//! write-back or prefetch thread is not there, and the file's writer lock
//! (`flock`) belongs to an open file description the child shares with the
//! parent, so unlocking it in the child would unlock it for the parent. So a
//! cache opened before a fork is *left to its parent* in the child: it keeps
//! answering look-ups and `offset_to_addr` from what it holds (runtimes
//! created before the fork keep computing), packs new weights on the child's
//! heap, and never writes, locks, unlocks, trims or deletes anything of the
//! file; `finalize` and `wait` return at once (`XNNCACHE_OK`), `compact`
//! refuses (`XNNCACHE_INVALID_STATE`), and a close joins no thread. A child
//! that wants to persist opens a cache of its own (its own open file
//! description, its own lock). Every short lock of every open cache (and the
//! handle table, the exit list, the log callback's) is taken before the fork
//! and released after it on both sides ([`at_fork_prepare`]), so that the
//! child finds them free; `finalizing`, held across a write-back's I/O and its
//! yielding, is never taken there, and the child never takes it.
//!
//! **exit.** A normal exit finishes the write-back of every cache of this
//! process ([`finish_every_write_back`]): it hurries them all first, then
//! waits for each, 10 s at most in all. It never waits for a write-back it
//! cannot see end: one running on the exiting thread (`exit()` from a log
//! callback there), one whose cache lock the exiting thread holds (`exit()`
//! from a signal handler that interrupted it), or one of the parent of a
//! forked child. It never blocks on a lock it cannot take promptly.

// `HELD` below is `const`-initialised; clippy of Debian's 1.96 says otherwise
// on targets whose thread-locals are not native (Android, windows-gnu).
#![allow(clippy::missing_const_for_thread_local)]

use std::any::Any;
use std::cell::RefCell;
use std::collections::HashSet;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Once, TryLockError, Weak};
use std::time::{Duration, Instant};

use super::state::State;
use super::writeback::{WriteBack, YIELD_AT_MOST};
use super::{lock, Core};
use crate::logging::Level;

/// How many forks this process descends from since xnncache was loaded:
/// bumped in the child of every `fork()`. A cache whose state was made in
/// another generation belongs to an ancestor process.
static FORKS: AtomicU64 = AtomicU64::new(0);

/// This process's fork generation (see [`FORKS`]).
pub(super) fn fork_generation() -> u64 {
    // Relaxed: the only writer is the child handler, on the thread that
    // forked, before any other thread of the child exists.
    FORKS.load(Ordering::Relaxed)
}

/// Every cache opened in this process (or an ancestor), for the fork handlers.
static LIVE: Mutex<Vec<Weak<Core>>> = Mutex::new(Vec::new());

/// Makes `core` known to the fork handlers (registered with the first cache).
pub(super) fn register(core: &Arc<Core>) {
    static HANDLERS: Once = Once::new();
    HANDLERS.call_once(|| {
        crate::sys::at_fork(at_fork_prepare, at_fork_parent, at_fork_child);
    });
    let mut live = lock(&LIVE);
    live.retain(|c| c.strong_count() > 0);
    live.push(Arc::downgrade(core));
}

impl Core {
    /// Whether this cache was opened by an ancestor of this process (before a
    /// `fork()`): then it is only read here (see the module's text).
    pub(super) fn forked(&self) -> bool {
        self.born != fork_generation()
    }

    /// What a forked child's finalize does: ends the creations (so that
    /// XNNPACK's setup finds the cache finalized) and says, once, that
    /// nothing of this process is persisted through this cache.
    pub(super) fn finalize_in_child(&self) {
        self.end_creations();
        let why = "this cache was opened before fork(): this process packs new weights in its memory and persists nothing through it (open a cache of its own to persist)";
        self.fall_back("fork", Level::XNNCACHE_LOG_WARN, why.to_string());
    }
}

impl State {
    /// In a child of `fork()`: gives the file up to the parent. The store is
    /// dropped without unlocking (the `flock` belongs to the description the
    /// parent shares) or deleting a rebuild's temporary (the parent's); the
    /// lock file's descriptor is closed, which releases nothing while the
    /// parent holds it open. New packings go to the heap from here on.
    pub(super) fn leave_to_parent(&mut self) {
        self.generation = fork_generation();
        self.arena_full = true;
        if let Some(mut store) = self.store.take() {
            store.leave_to_parent();
        }
    }
}

impl WriteBack {
    /// In a child of `fork()`: no write-back thread exists here.
    fn leave_to_parent(&mut self) {
        (self.requested, self.running, self.hurry, self.in_flight) = (false, false, false, 0);
        self.requested_at = None;
    }
}

/// One thread's mark on a lock it holds, for the exit handler: set while the
/// guard lives (see [`Core::state_holder`]).
pub(super) struct Holding<'a>(&'a AtomicU64);

impl<'a> Holding<'a> {
    pub(super) fn new(holder: &'a AtomicU64) -> Holding<'a> {
        holder.store(crate::sys::thread_id(), Ordering::Relaxed);
        Holding(holder)
    }
}

impl Drop for Holding<'_> {
    fn drop(&mut self) {
        self.0.store(0, Ordering::Relaxed);
    }
}

/// A cache's short locks, held across a `fork()`. The guards borrow the
/// `Core` the `Arc` keeps alive; declared before it, they are dropped first.
struct Frozen {
    state: MutexGuard<'static, State>,
    background: MutexGuard<'static, WriteBack>,
    reason: MutexGuard<'static, Option<String>>,
    logged: MutexGuard<'static, HashSet<&'static str>>,
    _core: Arc<Core>,
}

/// Everything [`at_fork_prepare`] took, in the order it took it.
struct Held {
    table: Box<dyn Any>,
    live: MutexGuard<'static, Vec<Weak<Core>>>,
    cores: Vec<Frozen>,
    at_exit: MutexGuard<'static, Vec<Weak<Core>>>,
    sink: Box<dyn Any>,
    #[cfg(feature = "fault-injection")]
    fault: Box<dyn Any>,
}

impl Held {
    /// Releases every lock, in the reverse order, then the `Arc`s (a last
    /// one closes its cache here, with no lock of ours held).
    fn release(self) {
        let Held { table, live, cores, at_exit, sink, #[cfg(feature = "fault-injection")] fault } = self;
        #[cfg(feature = "fault-injection")]
        drop(fault);
        drop(sink);
        drop(at_exit);
        let mut arcs = Vec::with_capacity(cores.len());
        for Frozen { state, background, reason, logged, _core } in cores.into_iter().rev() {
            drop((logged, reason, background, state));
            arcs.push(_core);
        }
        drop(live);
        drop(table);
        drop(arcs);
    }
}

thread_local! {
    /// The locks held by this thread between the fork handlers.
    static HELD: RefCell<Option<Held>> = const { RefCell::new(None) };
}

/// Before `fork()`, on the forking thread: takes the handle table, the list
/// of caches, every live cache's `state`, `background.state`,
/// `fallback_reason` and `logged` (the order of [`Core`]'s documentation,
/// cache after cache: no code holds two caches' locks), the exit list and
/// the log callback's lock. None of them is ever held while host code runs
/// or while waiting for another of them out of this order; `finalizing` is
/// not taken (it is held across I/O and the yielding).
unsafe extern "C" fn at_fork_prepare() {
    let _ = catch_unwind(|| {
        let table = crate::handles::freeze();
        let live = lock(&LIVE);
        let cores: Vec<Arc<Core>> = live.iter().filter_map(Weak::upgrade).collect();
        let cores = cores
            .into_iter()
            .map(|core| {
                // SAFETY: the `Arc` stored beside these guards keeps the `Core`
                // alive until they are dropped (see `Frozen`, `Held::release`).
                let c: &'static Core = unsafe { &*Arc::as_ptr(&core) };
                Frozen { state: lock(&c.state), background: lock(&c.background.state), reason: lock(&c.fallback_reason), logged: lock(&c.logged), _core: core }
            })
            .collect();
        let held = Held {
            table,
            live,
            cores,
            at_exit: lock(&AT_EXIT),
            sink: crate::logging::freeze(),
            #[cfg(feature = "fault-injection")]
            fault: crate::fault::freeze(),
        };
        HELD.with(|h| *h.borrow_mut() = Some(held));
    });
}

/// After `fork()`, in the parent: releases what the prepare handler took.
unsafe extern "C" fn at_fork_parent() {
    let _ = catch_unwind(|| {
        if let Some(held) = HELD.with(|h| h.borrow_mut().take()) {
            held.release();
        }
    });
}

/// After `fork()`, in the child (its only thread): a new fork generation;
/// every cache opened before is left to the parent (its store dropped
/// without touching the file, no write-back thread expected); then the
/// locks are released.
unsafe extern "C" fn at_fork_child() {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        FORKS.fetch_add(1, Ordering::Relaxed);
        if let Some(mut held) = HELD.with(|h| h.borrow_mut().take()) {
            for frozen in &mut held.cores {
                frozen.state.leave_to_parent();
                frozen.background.leave_to_parent();
            }
            held.release();
        }
    }));
}

/// Every cache that started a write-back thread, for [`finish_every_write_back`].
static AT_EXIT: Mutex<Vec<Weak<Core>>> = Mutex::new(Vec::new());

/// Makes a normal process exit finish `core`'s write-back (see the module's text).
pub(super) fn finish_at_exit(core: &Arc<Core>) {
    static REGISTER: Once = Once::new();
    REGISTER.call_once(|| {
        crate::sys::at_exit(finish_every_write_back);
    });
    let mut caches = lock(&AT_EXIT);
    caches.retain(|c| c.strong_count() > 0);
    caches.push(Arc::downgrade(core));
}

/// How long the exit handler tries a lock before giving up on what it guards:
/// held longer, it is held by the exiting thread itself (a signal handler
/// called `exit()`), or by a thread that will not let go in time.
const LOCK_PATIENCE: Duration = Duration::from_millis(100);

/// `m`, locked without blocking for more than [`LOCK_PATIENCE`].
fn lock_patiently<T>(m: &Mutex<T>) -> Option<MutexGuard<'_, T>> {
    let until = Instant::now() + LOCK_PATIENCE;
    loop {
        match m.try_lock() {
            Ok(g) => return Some(g),
            Err(TryLockError::Poisoned(e)) => return Some(e.into_inner()),
            Err(TryLockError::WouldBlock) if Instant::now() < until => std::thread::yield_now(),
            Err(TryLockError::WouldBlock) => return None,
        }
    }
}

/// At exit: every live cache's write-back, hurried, then waited for (10 s
/// at most in all). No thread-local is touched (they may be gone by now),
/// no lock is waited for unboundedly, nothing can unwind.
extern "C" fn finish_every_write_back() {
    let _ = catch_unwind(|| {
        let until = Instant::now() + YIELD_AT_MOST;
        let Some(list) = lock_patiently(&AT_EXIT) else {
            crate::fault::count("exit: the list of caches is locked");
            return;
        };
        let caches: Vec<Arc<Core>> = list.iter().filter_map(Weak::upgrade).collect();
        drop(list);
        let me = crate::sys::thread_id();
        let caches: Vec<Arc<Core>> = caches.into_iter().filter(|core| core.may_finish_at_exit(me)).collect();
        // All first: a cache waited for later must not yield meanwhile.
        let caches: Vec<Arc<Core>> = caches.into_iter().filter(|core| core.hurry_at_exit()).collect();
        for core in &caches {
            crate::fault::point("exit: waiting for a write-back");
            core.wait_at_exit(until);
        }
    });
}

impl Core {
    /// Whether the exit handler, on thread `me`, can wait for this cache's
    /// write-back: not if the cache is a parent's (a forked child has no
    /// write-back thread), not on the write-back thread itself (`exit()` from
    /// a log callback there), and not while `me` holds a lock the write-back
    /// needs (`exit()` from a signal handler that interrupted it).
    fn may_finish_at_exit(&self, me: u64) -> bool {
        let skip = if self.forked() {
            "exit: a cache of the parent process skipped"
        } else if self.write_back_thread.load(Ordering::Relaxed) == me {
            "exit: on the cache's own write-back thread, not waited for"
        } else if self.state_holder.load(Ordering::Relaxed) == me || self.finalizing_holder.load(Ordering::Relaxed) == me {
            "exit: a lock of the cache is held by the exiting thread, not waited for"
        } else {
            return true;
        };
        crate::fault::count(skip);
        false
    }

    /// Ends the yielding of the write-back, as [`Core::hurry_write_back`];
    /// false when its state cannot be locked promptly (the cache is given up).
    fn hurry_at_exit(&self) -> bool {
        let Some(mut st) = lock_patiently(&self.background.state) else {
            crate::fault::count("exit: a cache's write-back state is locked, not waited for");
            return false;
        };
        if st.requested || st.running {
            st.hurry = true;
            crate::fault::count("write-back: hurried");
            self.background.changed.notify_all();
        }
        true
    }

    /// Waits for the write-back until `until` at most.
    fn wait_at_exit(&self, until: Instant) {
        let bg = &self.background;
        let Some(mut st) = lock_patiently(&bg.state) else { return };
        while st.requested || st.running {
            let Some(left) = until.checked_duration_since(Instant::now()).filter(|l| !l.is_zero()) else { return };
            st = bg.changed.wait_timeout(st, left).unwrap_or_else(|e| e.into_inner()).0;
        }
    }
}
