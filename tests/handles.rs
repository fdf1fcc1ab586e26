//! Handles of the C API (issue 18): a closed handle stays invalid even when
//! a new cache is opened, a close racing calls on other threads never frees
//! the cache under them, and the options struct is read no further than its
//! `options_size` says.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use xnncache::capi::{xnncache_close, xnncache_compact, xnncache_finalize, xnncache_open, xnncache_provider, xnncache_register_weights, xnncache_stats, xnncache_wait};
use xnncache::handles::xnncache as Handle;
use xnncache::{Stats, Status};
use xnncache_tests::models::fc_qd8_qc4w;
use xnncache_tests::{last_error, options, Cache, Held, TempDir, Watchdog};

/// Tests acting through the global fault hook run one at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn stats_of(h: *mut Handle) -> Status {
    let mut s = Stats::default();
    xnncache_stats(h, &mut s)
}

/// A handle closed before another cache was opened (which the allocator
/// likes to place at the freed address) does not name the new cache.
#[test]
fn a_closed_handle_never_names_another_cache() {
    let o = options(None);
    for _ in 0..50 {
        let mut old = std::ptr::null_mut();
        assert_eq!(xnncache_open(&o, &mut old), Status::XNNCACHE_OK);
        xnncache_close(old);
        let mut new = std::ptr::null_mut();
        assert_eq!(xnncache_open(&o, &mut new), Status::XNNCACHE_OK);
        assert_ne!(old, new, "a handle was given out twice");
        assert_eq!(stats_of(old), Status::XNNCACHE_INVALID_ARGUMENT);
        assert!(last_error().contains("not an open xnncache"), "{}", last_error());
        assert_eq!(xnncache_finalize(old), Status::XNNCACHE_INVALID_ARGUMENT);
        assert!(xnncache_provider(old).is_null());
        xnncache_close(old); // a second close is reported, not a crash, and leaves `new` alone
        assert_eq!(stats_of(new), Status::XNNCACHE_OK);
        xnncache_close(new);
    }
    // Foreign pointers are not handles either.
    let mut local = 0u64;
    assert_eq!(stats_of(&mut local as *mut u64 as *mut Handle), Status::XNNCACHE_INVALID_ARGUMENT);
}

/// Threads keep calling into a cache while the main thread closes it: each
/// call either works or says the handle is not open; none crashes.
#[test]
fn closes_racing_calls_from_other_threads() {
    const THREADS: usize = 4;
    let dir = TempDir::new("handles-race");
    let weights = vec![7u8; 4096];
    for round in 0..20 {
        let path = std::ffi::CString::new(dir.file(&format!("c{round}.xnncache")).as_os_str().as_encoded_bytes()).unwrap();
        let mut h = std::ptr::null_mut();
        assert_eq!(xnncache_open(&options(Some(&path)), &mut h), Status::XNNCACHE_OK);
        let handle = h as usize;
        let (ok, refused) = (AtomicU64::new(0), AtomicU64::new(0));
        let closed = AtomicBool::new(false);
        std::thread::scope(|s| {
            for t in 0..THREADS {
                let (ok, refused, closed, weights) = (&ok, &refused, &closed, &weights);
                s.spawn(move || {
                    let h = handle as *mut Handle;
                    let mut after_close = 0;
                    while after_close < 100 {
                        let was_closed = closed.load(Ordering::SeqCst);
                        let status = match t {
                            0 => stats_of(h),
                            1 => xnncache_finalize(h),
                            2 => xnncache_register_weights(h, weights.as_ptr().cast(), weights.len(), c"w".as_ptr()),
                            _ => xnncache_wait(h, 0),
                        };
                        match status {
                            // (`xnncache_wait(h, 0)` may find the write-back still running.)
                            Status::XNNCACHE_OK | Status::XNNCACHE_BUSY => {
                                assert!(!was_closed, "a call after the close returned found the cache open");
                                ok.fetch_add(1, Ordering::SeqCst);
                            }
                            Status::XNNCACHE_INVALID_ARGUMENT => {
                                refused.fetch_add(1, Ordering::SeqCst);
                            }
                            other => panic!("{other:?}: {}", last_error()),
                        }
                        if was_closed {
                            after_close += 1;
                        }
                    }
                });
            }
            // Close once every thread is calling.
            while ok.load(Ordering::SeqCst) < 100 * THREADS as u64 {
                std::hint::spin_loop();
            }
            xnncache_close(h);
            closed.store(true, Ordering::SeqCst);
        });
        assert!(refused.load(Ordering::SeqCst) >= 100 * THREADS as u64);
    }
}

/// A close while another thread is inside a call on the same cache (a
/// compaction, held at one of its steps) returns at once; the call finishes
/// normally, and the cache is closed when it returns. Before, close freed
/// the cache under the running call.
#[test]
fn a_close_never_frees_a_cache_under_a_running_call() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = TempDir::new("handles-close");
    let path = dir.file("c.xnncache");
    let model = fc_qd8_qc4w();
    let expected = model.run(std::ptr::null_mut());
    let cache = Cache::open(Some(&path));
    model.register(&cache, true);
    assert_eq!(model.run(cache.provider()), expected);
    cache.finalize();
    let entries = cache.stats().entries;

    let mut held = Held::at("compact: payloads and index written", "compactor");
    let handle = cache.0 as usize;
    std::mem::forget(cache); // closed by hand below
    let compactor = std::thread::Builder::new()
        .name("compactor".into())
        .spawn(move || xnncache_compact(handle as *mut Handle))
        .unwrap();
    held.reached("the compaction's step");
    {
        let _watchdog = Watchdog::new("xnncache_close while another thread is inside xnncache_compact", 120);
        xnncache_close(handle as *mut Handle);
    }
    assert_eq!(stats_of(handle as *mut Handle), Status::XNNCACHE_INVALID_ARGUMENT);
    held.release();
    let status = compactor.join().unwrap();
    drop(held);
    assert_eq!(status, Status::XNNCACHE_OK, "the call that was running when the handle was closed");
    let next = Cache::open(Some(&path));
    assert_eq!(next.stats().loaded_entries, entries, "the compacted file");
    model.register(&next, true);
    assert_eq!(model.run(next.provider()), expected);
}

/// An options struct of an older, smaller layout that ends where readable
/// memory ends: only its `options_size` is read, and the open is refused.
#[test]
fn an_options_struct_ending_at_a_guard_page_is_read_no_further() {
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
    // SAFETY: a fresh anonymous mapping of two pages, unmapped below.
    let base = unsafe { libc::mmap(std::ptr::null_mut(), 2 * page, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0) };
    assert_ne!(base, libc::MAP_FAILED);
    // SAFETY: the second page of our own mapping becomes the guard.
    assert_eq!(unsafe { libc::mprotect(base.cast::<u8>().add(page).cast(), page, libc::PROT_NONE) }, 0);
    for size in [4u32, 8] {
        // SAFETY: `size` bytes at the end of the first page, inside the mapping.
        let at = unsafe { base.cast::<u8>().add(page - size as usize) };
        // SAFETY: as above; the struct starts with `options_size`, then `key_size`.
        unsafe {
            at.cast::<u32>().write(size);
            if size == 8 {
                at.add(4).cast::<u32>().write(24);
            }
        }
        let mut out = std::ptr::null_mut();
        assert_eq!(xnncache_open(at.cast(), &mut out), Status::XNNCACHE_INVALID_ARGUMENT);
        assert!(last_error().contains("options_size"), "{}", last_error());
        assert!(out.is_null());
    }
    // SAFETY: our own mapping, no longer used.
    unsafe { libc::munmap(base, 2 * page) };
}
