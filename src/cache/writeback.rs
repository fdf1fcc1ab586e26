//! Step 5: the write-back thread. It takes the checksums of new entries,
//! writes packed pages to the file and seals them, and commits the index.
//!
//! It yields to the host's computation: the disk writes of a 667 MiB
//! write-back made a no-cache llm_1b process's executes 1.8x slower on the
//! machine this was measured on (another process writing the same bytes, no
//! xnncache involved), more than any pacing or priority recovered. So a
//! background write-back starts once the process's other threads are quiet
//! (under a quarter of one core over a window of at least 20 ms: see
//! [`Window`]), pauses between its 8 MiB pieces while they are busy again,
//! and goes ahead regardless [`YIELD_AT_MOST`] after the finalize that asked
//! for it; a waiter (`xnncache_wait`, a close, a compaction) ends the
//! yielding at once. `XNNCACHE_FLAG_EAGER_WRITEBACK` turns it off. While it
//! yields it holds `finalizing` and the file's inter-process writer lock
//! (held since this process first packed into the file: its commit must
//! cover that space before another writer appends), so another process
//! starting meanwhile persists nothing new.
//!
//! A process that exits without closing its caches (returning from `main`
//! while a model still computes, say) would lose a yielding write-back with
//! its threads; so at a normal exit every cache's write-back in progress or
//! asked for is finished, for at most [`YIELD_AT_MOST`] (see `lifetime`).

use std::any::Any;
use std::collections::HashSet;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::state::{addr_of, entry_bytes, State};
use super::lifetime::Holding;
use super::{lock, Core, ALIGNMENT};
use crate::error::{Error, Result, Status};
use crate::format;
use crate::heap::is_heap_offset;
use crate::index::{EntryId, IndexKey, Map};
use crate::logging::Level;

/// A commit being made: its index (already written into the arena) and
/// what it covers.
pub(super) struct Commit {
    pub(super) index_offset: u64,
    pub(super) index: Vec<u8>,
    pub(super) data_end: u64,
    /// The entries whose payloads the index names.
    pub(super) entries: Vec<EntryId>,
    /// How many uncommitted persistent links it covers.
    pub(super) links: usize,
    /// The programs it records, and the entries the retention rule left
    /// out of it (see `crate::retention`).
    pub(super) programs: Vec<super::programs::EntryProgram>,
    pub(super) dropped: Vec<EntryId>,
}

/// What the write-back thread is asked to do and has done.
#[derive(Default)]
pub(super) struct Background {
    pub(super) state: Mutex<WriteBack>,
    pub(super) changed: Condvar,
}

#[derive(Default)]
pub(super) struct WriteBack {
    /// A finalize asked for a write-back the thread has not started yet.
    pub(super) requested: bool,
    /// When the oldest finalize not yet served asked.
    pub(super) requested_at: Option<Instant>,
    /// Someone waits for the write-back: it no longer yields.
    pub(super) hurry: bool,
    pub(super) running: bool,
    /// The cache is closing: finish what was requested, then end.
    pub(super) stop: bool,
    /// Bytes being written back now.
    pub(super) in_flight: u64,
    /// Why a write-back failed (after that the file takes nothing more from this cache).
    pub(super) error: Option<Error>,
    /// When the last commit became durable (milliseconds since 1970), 0: none yet.
    pub(super) last_commit_unix_ms: u64,
}

impl Core {
    pub(super) fn has_store(&self) -> bool {
        self.locked().store.is_some()
    }

    /// The write-back thread: one write-back per batch of finalize requests.
    /// A panic in a write-back poisons the store (nothing more is persisted)
    /// and is reported to `wait` as an error; the thread goes on serving
    /// requests, so waiters and close always return.
    pub(super) fn write_back_loop(&self) {
        // Inference running meanwhile comes first (issue 10: steady speed
        // during the write-back).
        crate::sys::lower_thread_priority();
        self.write_back_thread.store(crate::sys::thread_id(), std::sync::atomic::Ordering::Relaxed);
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
            let asked = st.requested_at.take().unwrap_or_else(Instant::now);
            drop(st);
            let mut quiet = Quiet { core: self, until: asked + YIELD_AT_MOST, window: Window::default() };
            let mut pause = || {
                if self.yield_writeback {
                    quiet.wait();
                }
            };
            let result = catch_unwind(AssertUnwindSafe(|| self.write_back(&mut pause))).unwrap_or_else(|panic| {
                let why = format!("the write-back panicked ({})", panic_message(&*panic));
                self.poison(&why);
                Err(Error::new(Status::XNNCACHE_INTERNAL_ERROR, why))
            });
            self.write_back_ended(result.err());
        }
    }

    /// Marks the write-back in progress as over (with its error, which is
    /// sticky: after a failure the store is poisoned, so nothing this cache
    /// packs later reaches the file either) and wakes every waiter.
    pub(super) fn write_back_ended(&self, error: Option<Error>) {
        let mut st = lock(&self.background.state);
        st.running = false;
        if !st.requested {
            st.hurry = false; // served: the next finalize yields again
        }
        if let Some(e) = error {
            st.error = Some(e);
        }
        drop(st);
        self.background.changed.notify_all();
    }

    /// The write-back thread ended by a panic outside any write-back: nothing
    /// will serve requests any more, so they fail instead of hanging.
    pub(super) fn write_back_thread_died(&self) {
        self.poison("the write-back thread panicked");
        lock(&self.background.state).requested = false;
        self.write_back_ended(Some(Error::new(Status::XNNCACHE_INTERNAL_ERROR, "the write-back thread panicked")));
    }

    /// Hashes the bytes of new persistent entries for the file's index, with
    /// the state unlocked: runtimes created meanwhile are not held up.
    pub(super) fn checksum_new_entries(&self, pause: &mut dyn FnMut()) {
        let todo = self.locked().unchecksummed();
        let sums: Vec<(EntryId, u64)> = todo
            .into_iter()
            .map(|(id, addr, size)| {
                pause();
                // SAFETY: an arena entry's `size` bytes at its address are mapped
                // for as long as the cache lives and never change once inserted
                // (sealing swaps in identical file pages).
                (id, crate::format::checksum(unsafe { core::slice::from_raw_parts(addr as *const u8, size) }))
            })
            .collect();
        let mut st = self.locked();
        for (id, sum) in sums {
            st.index.get_mut(id).checksum.get_or_insert(sum);
        }
    }

    /// Writes back and write-protects every page packed so far, and commits
    /// new persistent entries to the file; returns whether it committed.
    /// Space still pending on another thread is left writable (and uncommitted).
    /// `pause` is called between pieces of the work (see the module's text).
    pub(super) fn write_back(&self, pause: &mut dyn FnMut()) -> Result<bool> {
        let _one_at_a_time = lock(&self.finalizing);
        let _mark = Holding::new(&self.finalizing_holder);
        self.checksum_new_entries(pause);
        let (job, commit) = {
            let mut st = self.locked();
            let commit = st.prepare_commit().map_err(|e| Error::io("cannot write the cache file's index", &e))?;
            let limit = st.pending.iter().filter(|p| !is_heap_offset(p.offset)).map(|p| p.offset).min();
            match st.arena.as_mut() {
                Some(arena) => (arena.begin_seal(limit.unwrap_or(usize::MAX)), commit),
                None => return Ok(false),
            }
        };
        let bytes = job.bytes() as u64;
        lock(&self.background.state).in_flight = bytes;
        let written = job.run_pausing(pause);
        lock(&self.background.state).in_flight = 0;
        if let Err(e) = written {
            // The packed bytes stay valid in memory; but the file may now lack
            // some of them, so it must never be committed from here again.
            self.poison(&format!("cannot write the cache file ({e})"));
            return Err(Error::io("cannot write the cache file", &e));
        }
        let publication = {
            let mut st = self.locked();
            st.stats.sealed_bytes += bytes;
            match (&commit, st.store.as_ref()) {
                (Some(c), Some(store)) => Some(store.prepare_publish(c.index_offset, &c.index, c.data_end)),
                _ => None,
            }
        };
        // The syncs, the header and the rename run with the state unlocked:
        // runtimes keep being reshaped and created meanwhile. Nothing else
        // touches the store's commit meanwhile (`finalizing` is held), and
        // until it is recorded, others see the previous commit: conservative.
        let written = publication.map(|p| p.write().map(|w| (p, w))).transpose();
        let mut st = self.locked();
        let committed = commit.is_some();
        let mut dropped = false;
        match (written, commit) {
            (Err(e), _) => {
                drop(st);
                // The other header slot still names the previous commit.
                self.poison(&format!("cannot commit the cache file ({e})"));
                return Err(Error::io("cannot commit the cache file", &e));
            }
            (Ok(Some((publication, w))), Some(commit)) => {
                if let Some(store) = st.store.as_mut() {
                    store.published(publication, w);
                }
                st.stats.commits += 1;
                // Only what this index holds is committed; weights inserted while
                // the pages were being written wait for the next commit.
                st.uncommitted -= commit.links;
                for &id in &commit.entries {
                    st.index.get_mut(id).committed = true;
                }
                st.programs.held = commit.programs;
                st.forget_dropped(&commit.dropped);
                dropped = !commit.dropped.is_empty();
                let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
                lock(&self.background.state).last_commit_unix_ms = now;
            }
            _ => {}
        }
        // Hand the file to other processes only when nothing of ours lies past
        // its newest commit: the next writer appends there.
        let in_use = st.pending.iter().any(|p| !is_heap_offset(p.offset)) || st.uncommitted > 0 || st.grown_past_commit();
        if !in_use {
            let st = &mut *st;
            if let (Some(store), Some(arena)) = (st.store.as_mut(), st.arena.as_mut()) {
                // Give the growth room back now, as a close would: the file
                // on disk is then what the next launch finds (a host that
                // looks at it after a save sees its final size). A shorter
                // file's blocks are freed, no byte is written.
                if committed && store.is_locked() && store.file_len() > store.committed_end() {
                    let _ = arena.trim_file();
                }
                store.unlock();
            }
        }
        drop(st);
        if dropped && !in_use {
            // The commit left entries out: a new file without them replaces
            // this one now, so that the file is bounded as soon as this
            // write-back is over (the commit above keeps the file valid if
            // the rewrite fails or is killed; the next close that wrote
            // anything tries again).
            crate::fault::point("drop: committed, before the rewrite");
            if let Err(e) = self.rewrite_held(super::compaction::Keep::Committed) {
                self.log_once("drop", Level::XNNCACHE_LOG_WARN, &format!("cannot rewrite the cache file without the weights it dropped ({}); it stays larger until a later launch writes", e.message));
            }
        }
        Ok(committed)
    }

    /// Stops persisting: the file may lack bytes an index would name.
    pub(super) fn poison(&self, why: &str) {
        if let Some(store) = self.locked().store.as_mut() {
            store.poison();
        }
        self.fall_back("poison", Level::XNNCACHE_LOG_ERROR, format!("{why}; nothing more is persisted"));
    }
}

impl State {
    /// After a commit that left `dropped` out: no key reaches them any more
    /// (a later runtime that needs one packs it again), and stats count them.
    pub(super) fn forget_dropped(&mut self, dropped: &[EntryId]) {
        if dropped.is_empty() {
            return;
        }
        let gone: HashSet<EntryId> = dropped.iter().copied().collect();
        let links: Vec<(u128, EntryId)> = self.index.persistent_links().filter(|(_, id)| gone.contains(id)).collect();
        for (key, id) in links {
            let key = crate::index::IndexKey::Persistent(key);
            self.index.unlink(&key, id);
            if let (IndexKey::Persistent(k), true) = (key, self.index.named_by(&key).is_empty()) {
                self.names.remove(&k);
            }
        }
        for &id in dropped {
            let e = self.index.get_mut(id);
            e.committed = false;
            let size = e.size as u64;
            self.stats.dropped_entries += 1;
            self.stats.dropped_bytes += size;
            self.stats.entries = self.stats.entries.saturating_sub(1);
            self.stats.stored_bytes = self.stats.stored_bytes.saturating_sub(size);
        }
    }

    /// New entries a commit will name, whose checksums are not taken yet:
    /// their ids, addresses and sizes.
    pub(super) fn unchecksummed(&self) -> Vec<(EntryId, usize, usize)> {
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

    /// Under the writer lock: writes the index of the next commit at the end
    /// of the file's used space. A commit is due with new persistent entries,
    /// for a new file, and whenever we used file space past the last commit
    /// (even for unregistered weights): once the lock is released, the next
    /// writer appends after `data_end`, so everything we still use must lie
    /// below it. Not while another thread is packing into the file: its space
    /// lies below the index and could not be sealed with it.
    pub(super) fn prepare_commit(&mut self) -> std::io::Result<Option<Commit>> {
        let (Some(store), Some(_)) = (self.store.as_ref(), self.arena.as_ref()) else { return Ok(None) };
        let grown = self.grown_past_commit();
        let packing = self.pending.iter().any(|p| !is_heap_offset(p.offset));
        if !store.is_locked() || packing || (self.uncommitted == 0 && store.generation() > 0 && !grown) {
            return Ok(None);
        }
        let mut index = format::Index::default();
        // Keyed like the index's `by_offset` (one map type less in an app).
        let mut position: Map<usize, u32> = Map::default();
        let mut links: Vec<(u128, EntryId)> = self.index.persistent_links().collect();
        links.sort_unstable();
        let retention = self.plan_retention(&links);
        let dropped: HashSet<EntryId> = retention.dropped.iter().copied().collect();
        let mut entries = Vec::new();
        for (key, id) in links {
            let e = *self.index.get(id);
            if is_heap_offset(e.offset) || dropped.contains(&id) {
                continue;
            }
            // Normally taken by `checksum_new_entries` outside the lock; an
            // entry inserted since then is hashed here.
            let checksum = match e.checksum {
                Some(c) => c,
                None => {
                    let c = crate::format::checksum(entry_bytes(self.arena.as_ref(), &self.heap, &e).expect("entries resolve"));
                    self.index.get_mut(id).checksum = Some(c);
                    c
                }
            };
            let next = index.payloads.len() as u32;
            let pos = *position.entry(id as usize).or_insert_with(|| {
                index.payloads.push(format::Payload { offset: e.offset as u64, size: e.size as u64, checksum });
                entries.push(id);
                next
            });
            index.keys.push(format::KeyRef { key, payload: pos });
            // A key may link two entries (XNNPACK's seed is a XOR of shapes: one
            // weight packed two ways); its names are one record all the same.
            let named = index.names.last().is_some_and(|(k, _)| *k == key);
            if let Some(names) = self.names.get(&key).filter(|_| !named) {
                index.names.push((key, names.clone()));
            }
        }
        index.programs = super::programs::recorded(&retention.programs, &position);
        let bytes = index.encode();
        let arena = self.arena.as_mut().expect("a store has an arena");
        let offset = arena.alloc_at_end(bytes.len(), ALIGNMENT).map_err(|e| std::io::Error::other(e.to_string()))?;
        let addr = arena.addr(offset).expect("just allocated");
        // SAFETY: fresh, writable arena space of `bytes.len()` bytes.
        unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), addr, bytes.len()) };
        let data_end = (offset + bytes.len()) as u64;
        crate::fault::point("commit: index staged");
        if !retention.dropped.is_empty() {
            crate::fault::point("drop: an index without the dropped entries staged");
        }
        Ok(Some(Commit {
            index_offset: offset as u64,
            index: bytes,
            data_end,
            entries,
            links: self.uncommitted,
            programs: retention.programs,
            dropped: retention.dropped,
        }))
    }
}


/// How long a background write-back yields to the host's computation at
/// most, from the finalize that asked for it.
pub(super) const YIELD_AT_MOST: Duration = Duration::from_secs(10);
/// How long the write-back waits before looking again at a busy process.
const QUIET_WINDOW: Duration = Duration::from_millis(20);

/// Whether the process computes, as the write-back thread sees it (see
/// [`Window`]).
struct Quiet<'a> {
    core: &'a Core,
    /// After this, the write-back goes ahead whatever the process does.
    until: Instant,
    window: Window,
}

impl Quiet<'_> {
    /// Returns once the other threads used under a quarter of one core over
    /// a window of at least [`QUIET_WINDOW`], or when someone waits for the
    /// write-back, the cache closes or the time is up.
    fn wait(&mut self) {
        let bg = &self.core.background;
        loop {
            let Some((process, thread)) = crate::sys::cpu_times() else { return };
            let now = Instant::now();
            if self.window.quiet(now, process, thread) {
                return;
            }
            let st = lock(&bg.state);
            if st.hurry || st.stop || now >= self.until {
                return;
            }
            crate::fault::count("write-back: yields");
            drop(bg.changed.wait_timeout(st, QUIET_WINDOW).unwrap_or_else(|e| e.into_inner()));
        }
    }
}

/// The verdict "quiet or busy", judged only over intervals of at least
/// [`QUIET_WINDOW`]: the write-back asks between every piece of its work,
/// often microseconds apart, and over so short an interval the other
/// threads' CPU time may not have been brought up to date yet (the kernel
/// adds a running thread's time at its ticks), so a busy process would look
/// quiet, and a quiet one busy. Between two judgements, the last one holds.
#[derive(Default)]
struct Window {
    /// The look that opened the current window: when, the process's and this
    /// thread's CPU time then.
    opened: Option<(Instant, Duration, Duration)>,
    /// The last verdict (none yet: busy, so that the first look waits one window).
    quiet: bool,
}

impl Window {
    /// Whether the process is quiet at `now`, given the CPU time the whole
    /// process and this thread have used so far.
    fn quiet(&mut self, now: Instant, process: Duration, thread: Duration) -> bool {
        match self.opened {
            Some((at, _, _)) if now.saturating_duration_since(at) < QUIET_WINDOW => {}
            Some((at, process0, thread0)) => {
                let others = process.saturating_sub(process0).saturating_sub(thread.saturating_sub(thread0));
                self.quiet = others * 4 < now - at;
                self.opened = Some((now, process, thread));
            }
            None => self.opened = Some((now, process, thread)),
        }
        self.quiet
    }
}

impl Core {
    /// Ends the yielding of the write-back asked for or running, if any.
    pub(super) fn hurry_write_back(&self) {
        let mut st = lock(&self.background.state);
        if st.requested || st.running {
            st.hurry = true;
            crate::fault::count("write-back: hurried");
            self.background.changed.notify_all();
        }
    }

    /// Waits until no write-back is asked for or running, until `deadline`
    /// at most (`None`: as long as it takes): the write-back's state then, or
    /// `None` when the time ran out.
    pub(super) fn write_back_done(&self, deadline: Option<Instant>) -> Option<MutexGuard<'_, WriteBack>> {
        let bg = &self.background;
        let mut st = lock(&bg.state);
        while st.requested || st.running {
            st = match deadline {
                None => bg.changed.wait(st).unwrap_or_else(|e| e.into_inner()),
                Some(d) => {
                    let left = d.checked_duration_since(Instant::now()).filter(|left| !left.is_zero())?;
                    bg.changed.wait_timeout(st, left).unwrap_or_else(|e| e.into_inner()).0
                }
            };
        }
        Some(st)
    }
}

/// What a panic said, when it said it with a string.
fn panic_message(panic: &(dyn Any + Send)) -> &str {
    panic.downcast_ref::<&str>().copied().or_else(|| panic.downcast_ref::<String>().map(String::as_str)).unwrap_or("no message")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The verdict is judged over a whole window, never over the
    /// microseconds since the last look: right after a verdict, CPU time the
    /// kernel has not yet added (or has just added in one tick) changes
    /// nothing. (Before issue 26, each look judged the time since the
    /// previous one: the looks at +10 µs below said busy, then quiet.)
    #[test]
    fn quiet_is_judged_over_a_whole_window() {
        let ms = Duration::from_millis;
        let us = Duration::from_micros;
        let t0 = Instant::now();
        let mut w = Window::default();
        assert!(!w.quiet(t0, ms(0), ms(0)), "the first look judges nothing: it waits one window");
        assert!(!w.quiet(t0 + ms(5), ms(0), ms(0)), "nor a look inside the first window");
        // Over 20 ms the other threads used 1 ms: quiet.
        assert!(w.quiet(t0 + ms(20), ms(1), ms(0)));
        // 10 µs later another thread's tick lands (8 µs): still the verdict of the window.
        assert!(w.quiet(t0 + ms(20) + us(10), ms(1) + us(8), ms(0)));
        // Over the next 25 ms others used 10 ms (40% of a core): busy.
        assert!(!w.quiet(t0 + ms(45), ms(11), ms(0)));
        // 10 µs later no CPU time was added yet: still busy.
        assert!(!w.quiet(t0 + ms(45) + us(10), ms(11), ms(0)));
        // This thread's own CPU time does not count.
        assert!(w.quiet(t0 + ms(70), ms(31), ms(20)));
    }
}
