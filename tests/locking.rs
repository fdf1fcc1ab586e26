//! What may run while the cache's lock is held, and what a host's code may do
//! from inside the cache (issue 18): no disk wait blocks a running runtime, a
//! log callback may call back into the cache that is logging, a panic on the
//! write-back thread ends in an error rather than a hang, and a launch that
//! adds nothing takes no writer lock.
//!
//! The tests that act through the global fault hook or log callback run one
//! at a time (they share a lock); each arms a watchdog around what must return.

use std::ffi::{c_char, c_void, CStr};
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicUsize, Ordering};
use std::sync::Mutex;

use xnncache::capi::{xnncache_set_log_callback, xnncache_stats, xnncache_wait};
use xnncache::logging::Level;
use xnncache::{Stats, Status};
use xnncache_tests::launch::{Ended, Spec};
use xnncache_tests::models::{conv2d, fc_f32_bias, fc_qd8_qc4w};
use xnncache_tests::{last_error, Cache, Held, TempDir, Watchdog};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

fn is_writer_thread() -> bool {
    std::thread::current().name() == Some("xnncache-writeback")
}

/// A launch of the battery, run in a child of this binary.
#[test]
#[ignore]
fn child_launch() {
    xnncache_tests::launch::child_launch();
}

/// What the log callback below saw and did.
struct Reentry {
    /// Only messages about this file are acted on (other tests may log).
    tag: String,
    cache: AtomicUsize,
    messages: AtomicU32,
    stats: AtomicI32,
    wait: AtomicI32,
    reinstall: AtomicI32,
}

unsafe extern "C" fn reenter(_level: Level, message: *const c_char, user_data: *mut c_void) {
    // SAFETY: user_data is the test's `Reentry`, alive while the callback is installed.
    let r = unsafe { &*(user_data as *const Reentry) };
    // SAFETY: xnncache passes a NUL-terminated message valid during the call.
    let message = unsafe { CStr::from_ptr(message) }.to_string_lossy();
    if !message.contains(&r.tag) {
        return;
    }
    r.messages.fetch_add(1, Ordering::SeqCst);
    let cache = r.cache.load(Ordering::SeqCst) as *mut xnncache::capi::xnncache;
    let mut s = Stats::default();
    r.stats.store(xnncache_stats(cache, &mut s) as i32, Ordering::SeqCst);
    r.wait.store(xnncache_wait(cache, u32::MAX) as i32, Ordering::SeqCst);
    // The callback may even replace itself.
    r.reinstall.store(xnncache_set_log_callback(Some(reenter), user_data) as i32, Ordering::SeqCst);
}

/// A fallback logged while another process holds the writer lock: the
/// callback calls `xnncache_stats` and `xnncache_wait` on the cache that is
/// logging, and reinstalls itself. Before, the message was sent under the
/// cache's lock, and the callback deadlocked.
#[test]
fn a_log_callback_may_call_the_cache_that_is_logging() {
    let _one = one_at_a_time();
    let dir = TempDir::new("lock-callback");
    let path = dir.file("c.xnncache");
    let (first, second) = (fc_f32_bias(), conv2d());
    let expected = second.run(std::ptr::null_mut());
    {
        let cache = Cache::open(Some(&path));
        first.register(&cache, true);
        first.run(cache.provider());
        cache.finalize();
    }
    // Another process's writer lock: a lock on another open file description
    // of `<path>.lock` conflicts like one held by another process.
    let lock_path = dir.file("c.xnncache.lock");
    let holder = std::fs::OpenOptions::new().create(true).truncate(false).read(true).write(true).open(&lock_path).unwrap();
    // SAFETY: flock on a descriptor we own.
    assert_eq!(unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&holder), libc::LOCK_EX | libc::LOCK_NB) }, 0);

    let reentry = Box::new(Reentry {
        tag: path.display().to_string(),
        cache: AtomicUsize::new(0),
        messages: AtomicU32::new(0),
        stats: AtomicI32::new(-1),
        wait: AtomicI32::new(-1),
        reinstall: AtomicI32::new(-1),
    });
    let user_data = &*reentry as *const Reentry as *mut c_void;
    assert_eq!(xnncache_set_log_callback(Some(reenter), user_data), Status::XNNCACHE_OK);
    let cache = Cache::open(Some(&path));
    reentry.cache.store(cache.0 as usize, Ordering::SeqCst);
    first.register(&cache, true);
    second.register(&cache, true);
    let got = {
        let _watchdog = Watchdog::new("a runtime creation whose fallback message calls back into the cache", 120);
        // A new weight: the writer lock is tried, found held, and that is logged.
        second.run(cache.provider())
    };
    assert_eq!(xnncache_set_log_callback(None, std::ptr::null_mut()), Status::XNNCACHE_OK);
    assert_eq!(got, expected);
    assert!(reentry.messages.load(Ordering::SeqCst) >= 1, "the writer lock held elsewhere was not logged");
    assert_eq!(reentry.stats.load(Ordering::SeqCst), Status::XNNCACHE_OK as i32);
    assert_eq!(reentry.wait.load(Ordering::SeqCst), Status::XNNCACHE_OK as i32);
    assert_eq!(reentry.reinstall.load(Ordering::SeqCst), Status::XNNCACHE_OK as i32);
    assert!(cache.stats().not_persisted > 0, "the new weight went to memory: {:?}", cache.stats());
    drop(cache);
    drop(holder);
}

/// The commit's first sync is held for as long as the test likes: meanwhile
/// a runtime is reshaped and run, another is created, and the stats and
/// `xnncache_verify` answer. Before, the commit synced under the cache's lock
/// and every reshape waited for the disk.
#[test]
fn runtimes_run_and_are_created_while_a_commit_waits_for_the_disk() {
    let _one = one_at_a_time();
    let dir = TempDir::new("lock-commit");
    let path = dir.file("c.xnncache");
    let (model, other) = (fc_qd8_qc4w(), conv2d());
    let (expected, expected_other) = (model.run(std::ptr::null_mut()), other.run(std::ptr::null_mut()));
    let cache = Cache::open(Some(&path));
    model.register(&cache, true);
    other.register(&cache, true);
    let mut rt = model.create(cache.provider()).unwrap();

    let mut held = Held::at("commit: before syncing payloads and index", "xnncache-writeback");
    cache.start_finalize();
    held.reached("the write-back's commit");
    {
        let _watchdog = Watchdog::new("inference, a creation, stats and verify while a commit's sync is held", 120);
        assert_eq!(rt.infer().unwrap(), expected, "inference while the commit is held");
        assert_eq!(other.run(cache.provider()), expected_other, "a runtime created while the commit is held");
        let s = cache.stats();
        assert_eq!(s.commits, 0, "{s:?}");
        assert_eq!(xnncache::capi::xnncache_verify(cache.0), Status::XNNCACHE_OK, "{}", last_error());
    }
    held.release();
    cache.wait();
    drop(held);
    assert_eq!(cache.stats().commits, 1);
    cache.finalize();
    assert_eq!(rt.infer().unwrap(), expected);
}

/// A panic on the write-back thread (here, at the start of a commit) poisons
/// the cache with a message: `xnncache_wait` returns an error instead of
/// hanging, runtimes keep their weights, close returns, and the next launch
/// finds a usable file.
#[test]
fn a_panic_on_the_write_back_thread_is_an_error_not_a_hang() {
    let _one = one_at_a_time();
    let dir = TempDir::new("lock-panic");
    let path = dir.file("c.xnncache");
    let model = fc_qd8_qc4w();
    let expected = model.run(std::ptr::null_mut());
    let cache = Cache::open(Some(&path));
    model.register(&cache, true);
    let mut rt = model.create(cache.provider()).unwrap();
    xnncache::fault::set_hook(Some(Box::new(|point| {
        if is_writer_thread() && point == "commit: before syncing payloads and index" {
            panic!("injected by the test");
        }
    })));
    cache.start_finalize();
    let status = {
        let _watchdog = Watchdog::new("xnncache_wait after the write-back thread panicked", 120);
        xnncache_wait(cache.0, u32::MAX)
    };
    xnncache::fault::set_hook(None);
    assert_eq!(status, Status::XNNCACHE_INTERNAL_ERROR, "{}", last_error());
    assert!(last_error().contains("panicked"), "{}", last_error());
    assert_eq!(rt.infer().unwrap(), expected, "the runtime keeps its weights");
    // Nothing more reaches the file from this cache: a second finalize fails the same way.
    assert_eq!(model.run(cache.provider()), expected);
    cache.start_finalize();
    assert_eq!(xnncache_wait(cache.0, u32::MAX), Status::XNNCACHE_INTERNAL_ERROR);
    drop(rt);
    {
        let _watchdog = Watchdog::new("xnncache_close after the write-back thread panicked", 120);
        drop(cache);
    }
    let next = Cache::open(Some(&path));
    model.register(&next, true);
    assert_eq!(model.run(next.provider()), expected);
}

/// `strace` of a warm launch used to show `<path>.lock` created, `LOCK_EX`
/// taken two or three times and the folder listed three or four times. A
/// launch that finds everything (or folds what it packs into what the file
/// holds: deconvolution never looks up) now does none of it; the cold launch
/// before it shows the counters count.
#[test]
fn a_launch_that_adds_nothing_takes_no_writer_lock() {
    let dir = TempDir::new("lock-warm");
    let path = dir.file("c.xnncache");
    let models = "fc_f32,qc4,conv,deconv,depthwise";
    let launch = || match (Spec { path: &path, models, flags: "", env: Vec::new() }).run() {
        Ended::Done(l) => l,
        other => panic!("launch: {other:?}"),
    };
    let cold = launch();
    assert_eq!(cold.get("wrong"), 0);
    assert!(cold.get("commits") >= 1 && cold.get("writer_locks") >= 1 && cold.get("lock_files") >= 1, "{cold:?}");
    let warm = launch();
    assert_eq!(warm.get("wrong"), 0);
    assert!(warm.get("hits") > 0, "{warm:?}");
    assert!(warm.get("folded") > 0, "the warm launch packed nothing it folded (deconvolution): {warm:?}");
    assert_eq!(warm.get("commits"), 0, "{warm:?}");
    assert_eq!((warm.get("writer_locks"), warm.get("lock_files"), warm.get("folder_listings")), (0, 0, 0), "{warm:?}");
}
