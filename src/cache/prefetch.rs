//! A warm launch's prefetch. A cache that reuses a committed file knows at
//! open which bytes its runtimes will read: the payloads of that file. A
//! thread of its own brings them into memory and maps them, in file order
//! (the order they were packed, which is the order a model runs), while the
//! host is still defining its graphs; the first inference then finds them
//! mapped instead of faulting them in one page at a time. The opening thread
//! finds the mapping (under the state lock); the prefetch thread takes no
//! lock of the cache and only reads pages of that read-only mapping (and
//! hints on the file's descriptor), which live as long as the [`Core`] it
//! holds.
//!
//! What it does depends on what the page cache gives the file, which the
//! thread finds out as it goes (issue 27):
//!
//! - *Large folios* (ext4 on Linux 6.16+, XFS, ...): the kernel reads the file
//!   in large pieces and maps it with 2 MiB entries. A file in the page cache
//!   needs nothing (its first inference maps it in a few hundred faults); an
//!   evicted one is read by `MADV_POPULATE_READ` in 8 MiB chunks.
//! - *4 KiB folios* (Android's f2fs, ext4 before 6.16 or mounted
//!   `data=journal`, tmpfs): an evicted file is asked for 32 MiB ahead of the
//!   chunk being mapped, through the descriptor, in 128 KiB calls the kernel
//!   reads whole and queues together (one fault at a time reads one
//!   read-around window at a time); a file in the page cache has its pages
//!   mapped ahead by touching each of them, so that the first inference does
//!   not fault 4 KiB page after page (about 25 ms for llm_1b's 667 MiB).
//!
//! The thread tells the two apart with `PAGEMAP_SCAN` (Linux 6.7): whether
//! any of the pages it mapped got a 2 MiB entry. An evicted file's read-around
//! ramps up to 2 MiB folios only after tens of megabytes (40 MiB on the
//! development machine), so the first 64 MiB are read the first way before it
//! decides; a resident file is asked at eight pieces spread over it. Where the
//! question cannot be asked (older kernels: every Android kernel to 6.6, whose
//! ext4 and f2fs have no large folios) the file is taken for 4 KiB folios.

use std::fs::File;
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

/// 4 KiB folios, evicted file: how far ahead of the chunk being mapped the
/// file is asked for, and in what calls. Linux reads at most
/// max(read_ahead_kb, max_sectors_kb) of one `POSIX_FADV_WILLNEED` and skips
/// the rest; 128 KiB is the kernel's default read_ahead_kb, the smallest a
/// device gets unless its administrator lowers it. On the loop device of
/// issue 27, asking 32 MiB ahead took llm_1b's warm launch from disk from
/// 576 to 480 ms (7 rounds; 8 MiB ahead: 502).
const AHEAD: usize = 32 << 20;
const ASK: usize = 128 << 10;

/// 4 KiB folios, evicted file: bytes mapped per `MADV_POPULATE_READ` once
/// asked for (each call holds the address space's lock while it maps what
/// has arrived; the host's `mmap` calls wait that long at most).
const PIECE: usize = 256 << 10;

/// An evicted file: bytes read the kernel's way before deciding whether it
/// gives the file large folios (see the module's comment).
const PROBE: usize = 64 << 20;

/// A resident file smaller than this is not mapped ahead: starting a thread
/// costs more than its first inference's faults (about 3 us per 64 KiB).
const MAP_AHEAD_MIN: usize = 16 << 20;

/// The 2 MiB of a page-table entry that maps a large folio whole.
const PMD: usize = 2 << 20;

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
        let region = core.committed_payloads()?;
        // (A test makes a resident file look evicted: `fault::fail_next`.)
        let resident = looks_resident(region.addr, region.len) && crate::fault::check("prefetch: the file looks resident").is_ok();
        if resident && (region.len < MAP_AHEAD_MIN || !crate::sys::maps_ahead()) {
            // A small file in the page cache: no thread.
            return None;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new((Mutex::new(false), Condvar::new()));
        let (flag, finished, holder) = (Arc::clone(&stop), Arc::clone(&done), Arc::clone(core));
        let run = move || {
            // Nothing here can panic but an allocation failure; the guard keeps
            // even that from reaching the host.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                crate::sys::lower_thread_priority();
                if resident {
                    map_ahead(&region, &flag)
                } else {
                    bring_in(&region, &flag)
                }
            }));
            drop(region);
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

/// The committed payloads of the cache file: at `addr` in memory and
/// `offset` in `file`, `len` bytes.
struct Region {
    addr: usize,
    len: usize,
    offset: u64,
    file: Arc<File>,
}

impl Region {
    /// Whether any page of `[from, to)`, mapped already, has a 2 MiB entry;
    /// `None` where the system cannot say.
    fn large_folios(&self, from: usize, to: usize) -> Option<bool> {
        crate::sys::pmd_mapped(self.addr + from, to - from)
    }

    /// Reads (if needed) and maps `[at, at + n)`, page-aligned, by
    /// `MADV_POPULATE_READ`: it waits for reads in flight and fails instead
    /// of raising SIGBUS.
    fn populate(&self, at: usize, n: usize) {
        // SAFETY: `[at, at + n)` lies in the committed payload region of the
        // cache's read-only file mapping, page-aligned at DATA_START, which
        // stays mapped while the `Core` the thread holds lives.
        unsafe { crate::sys::bring_in((self.addr + at) as *const u8, n) }
    }

    /// Maps the pages of `[at, at + n)` that are in the page cache by
    /// touching them (page faults take only the mapping's own lock, where
    /// `MADV_POPULATE_READ` holds the whole address space's: the host's
    /// `mmap` calls during `load_method` slept behind it, 60 ms in all on
    /// llm_1b); the others by `populate`. `mincore` says which, for the
    /// whole range in one call: a page it finds is in the file, so touching
    /// it cannot raise SIGBUS (unless the file is truncated in between, which
    /// no writer of xnncache does to committed bytes).
    fn map_resident(&self, at: usize, n: usize) {
        let page = crate::sys::page_size();
        let p = (self.addr + at) as *const u8;
        // SAFETY: as in `populate`.
        let Some(pages) = (unsafe { crate::sys::residency(p, n) }) else {
            return self.populate(at, n);
        };
        // Runs of pages alike (in the page cache or not), without indexing:
        // the app build keeps no bounds check here (scripts/mobile).
        let mut from = 0;
        for run in pages.chunk_by(|a, b| a & 1 == b & 1) {
            let len = (run.len() * page).min(n - from);
            if run.first().is_some_and(|v| v & 1 != 0) {
                // SAFETY: mapped pages of the file, in the page cache (above).
                unsafe { crate::sys::touch_pages(p.add(from), len) };
            } else {
                self.populate(at + from, len);
            }
            from += run.len() * page;
        }
    }
}

/// A file in the page cache: maps its pages ahead unless the kernel maps
/// them 2 MiB at a time anyway.
fn map_ahead(r: &Region, stop: &AtomicBool) {
    // One page in each of SAMPLES 2 MiB pieces spread over the file, then:
    // did any get a 2 MiB entry?
    let first = (r.addr.next_multiple_of(PMD) - r.addr).min(r.len);
    let pieces = (r.len - first) / PMD;
    if pieces > 0 {
        let at = |i: usize| first + (pieces - 1) * i / (SAMPLES - 1).max(1) * PMD;
        for i in 0..SAMPLES {
            r.map_resident(at(i), crate::sys::page_size());
        }
        if (0..SAMPLES).any(|i| r.large_folios(at(i), at(i) + PMD) == Some(true)) {
            return;
        }
    }
    let mut done = 0;
    while done < r.len && !stop.load(Ordering::Relaxed) {
        let n = CHUNK.min(r.len - done);
        r.map_resident(done, n);
        done += n;
    }
}

/// An evicted file: reads and maps it (see the module's comment).
fn bring_in(r: &Region, stop: &AtomicBool) {
    // Some(true): 4 KiB folios; None: not known yet.
    let mut small = match r.large_folios(0, crate::sys::page_size().min(r.len)) {
        None => Some(true),
        Some(_) => None,
    };
    let (mut asked, mut done) = (0, 0);
    while done < r.len && !stop.load(Ordering::Relaxed) {
        crate::fault::point("prefetch: chunk");
        let n = CHUNK.min(r.len - done);
        if small == Some(true) {
            let until = (done + n + AHEAD).min(r.len);
            while asked < until {
                let m = ASK.min(until - asked);
                crate::sys::will_need_file(&r.file, r.offset + asked as u64, m);
                asked += m;
            }
            let mut at = done;
            while at < done + n {
                r.populate(at, PIECE.min(done + n - at));
                at += PIECE;
            }
        } else {
            // SAFETY: as in `Region::populate`.
            if !unsafe { crate::sys::is_resident((r.addr + done) as *const u8, n) } {
                r.populate(done, n);
            }
        }
        done += n;
        if small.is_none() {
            small = match r.large_folios(0, done) {
                Some(true) => Some(false),
                None => Some(true),
                Some(false) => (done >= PROBE).then_some(true),
            };
            asked = done;
        }
    }
}

impl Core {
    /// Where the committed payloads of a reused file are mapped, and their
    /// length; `None` for anything but a reused file mapped in one piece.
    fn committed_payloads(&self) -> Option<Region> {
        let st = self.locked();
        if st.stats.file_state != FileState::XNNCACHE_FILE_REUSED as u32 {
            return None;
        }
        let (store, arena) = (st.store.as_ref()?, st.arena.as_ref()?);
        let (start, end) = (DATA_START as usize, usize::try_from(store.committed_end()).ok()?);
        let (first, last) = (arena.addr(start)? as usize, arena.addr(end.checked_sub(1)?)? as usize);
        (end > start && last - first == end - 1 - start).then(|| Region {
            addr: first,
            len: end - start,
            offset: start as u64,
            file: store.file_handle(),
        })
    }
}
