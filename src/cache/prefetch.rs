//! A warm launch's prefetch. A cache that reuses a committed file knows at
//! open which bytes its runtimes will read: the payloads of that file. A
//! thread of its own brings them into memory, in file order (the order they
//! were packed, which is the order a model runs), while the host is still
//! defining its graphs; the first inference then finds them resident instead
//! of faulting them in one page at a time. Chunks already resident are
//! skipped (`mincore`), and a launch whose file is in the page cache (eight
//! pages spread over it say so) starts no thread at all. The opening thread
//! finds the mapping (under the state lock); the prefetch thread takes no
//! lock of the cache and only touches pages of that read-only mapping, which
//! lives as long as the [`Core`] it holds.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use super::Core;
use crate::format::DATA_START;
use crate::store::FileState;

/// Bytes brought in per call: large enough for big reads, small enough that
/// a close waits for at most one of them, and that the first layers are in
/// before the last ones are asked for.
const CHUNK: usize = 8 << 20;

/// The running prefetch of one cache.
pub(super) struct Prefetch {
    stop: Arc<AtomicBool>,
    /// Set, and notified, when the thread is done.
    done: Done,
    thread: JoinHandle<()>,
}

impl Prefetch {
    /// Starts the prefetch of `core`'s committed payloads, if it reuses a
    /// file (a new or rebuilt file is being written, and memory holds it).
    pub(super) fn start(core: &Arc<Core>) -> Option<Prefetch> {
        let (addr, len) = core.committed_payloads()?;
        // (A test makes a resident file look evicted: `fault::fail_next`.)
        if looks_resident(addr, len) && crate::fault::check("prefetch: the file looks resident").is_ok() {
            // The usual warm launch: the file is in the page cache. No
            // thread (starting one costs more than this whole check). Nor is
            // a resident file mapped ahead: tried on llm_1b on tmpfs (8
            // interleaved runs), populating its page tables while the graph
            // was defined slowed that by as much as the first inference gained.
            return None;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new((Mutex::new(false), Condvar::new()));
        let (flag, finished, holder) = (Arc::clone(&stop), Arc::clone(&done), Arc::clone(core));
        let run = move || {
            // Nothing here can panic but an allocation failure; the guard keeps
            // even that from reaching the host.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| bring_in(addr, len, &flag)));
            drop(holder);
            *super::lock(&finished.0) = true;
            finished.1.notify_all();
        };
        let thread = std::thread::Builder::new().name("xnncache-prefetch".into()).spawn(run).ok()?;
        Some(Prefetch { stop, done, thread })
    }

    /// Stops after the chunk in progress and waits for the thread.
    pub(super) fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
    }

    /// What [`wait`] waits on, to wait with no lock of the cache held.
    pub(super) fn done(&self) -> Done {
        Arc::clone(&self.done)
    }
}

/// Set, and notified, when a prefetch thread is done.
pub(super) type Done = Arc<(Mutex<bool>, Condvar)>;

/// Waits until the prefetch `done` belongs to is over, until `deadline` at
/// most; whether it is over.
pub(super) fn wait(done: &Done, deadline: Option<Instant>) -> bool {
    let (done, changed) = &**done;
    let mut over = super::lock(done);
    while !*over {
        over = match deadline {
            None => changed.wait(over).unwrap_or_else(|e| e.into_inner()),
            Some(d) => match d.checked_duration_since(Instant::now()) {
                Some(left) => changed.wait_timeout(over, left).unwrap_or_else(|e| e.into_inner()).0,
                None => return false,
            },
        };
    }
    true
}

/// Pages looked at before deciding whether a prefetch is needed: spread
/// over the region, each one `mincore` of one page.
const SAMPLES: usize = 8;

/// Whether `SAMPLES` pages spread over `[addr, addr + len)` are all resident.
/// A page cache that dropped part of the file drops it in runs of pages, so
/// a sample notices an evicted file; the thread then checks every chunk.
fn looks_resident(addr: usize, len: usize) -> bool {
    let page = crate::sys::page_size();
    let pages = len.div_ceil(page);
    (0..SAMPLES).all(|i| {
        let at = addr + (pages - 1) * i / (SAMPLES - 1).max(1) * page;
        // SAFETY: a page of the committed payload region, which is mapped
        // (the caller holds the `Core`), page-aligned.
        unsafe { crate::sys::is_resident(at as *const u8, page.min(addr + len - at)) }
    })
}

fn bring_in(addr: usize, len: usize, stop: &AtomicBool) {
    crate::sys::lower_thread_priority();
    let mut done = 0;
    while done < len && !stop.load(Ordering::Relaxed) {
        crate::fault::point("prefetch: chunk");
        let n = CHUNK.min(len - done);
        let chunk = (addr + done) as *const u8;
        // SAFETY: `[addr, addr + len)` is the committed payload region of the
        // cache's read-only file mapping, page-aligned at DATA_START, which
        // stays mapped while the `Core` this thread holds lives.
        unsafe {
            if !crate::sys::is_resident(chunk, n) {
                crate::sys::bring_in(chunk, n);
            }
        }
        done += n;
    }
}

impl Core {
    /// Where the committed payloads of a reused file are mapped, and their
    /// length; `None` for anything but a reused file mapped in one piece.
    fn committed_payloads(&self) -> Option<(usize, usize)> {
        let st = self.locked();
        if st.stats.file_state != FileState::XNNCACHE_FILE_REUSED as u32 {
            return None;
        }
        let (store, arena) = (st.store.as_ref()?, st.arena.as_ref()?);
        let (start, end) = (DATA_START as usize, usize::try_from(store.committed_end()).ok()?);
        let (first, last) = (arena.addr(start)? as usize, arena.addr(end.checked_sub(1)?)? as usize);
        (end > start && last - first == end - 1 - start).then_some((first, end - start))
    }
}
