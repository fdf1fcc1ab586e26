//! `xnncache_finalize` returns before the write-back: runtimes run meanwhile,
//! `xnncache_wait` and the stats tell how far it is, a failure leaves the
//! runtime and the previous commit alone, and closing waits for the commit.
//!
//! One test at a time acts inside the write-back through the global fault
//! hook, so these tests share one lock.

use std::sync::atomic::Ordering;
use std::sync::Mutex;

use xnncache::capi::{xnncache_wait, XNNCACHE_FLAG_READ_ONLY};
use xnncache::Status;
use xnncache_tests::models::{conv2d, fc_f32_bias, fc_qd8_qc4w};
use xnncache_tests::{file_mapping_usage, last_error, options, Cache, Counting, Held, TempDir};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn open_read_only(path: &std::path::Path) -> Cache {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let mut o = options(Some(&c));
    o.flags |= XNNCACHE_FLAG_READ_ONLY;
    Cache::open_with(&o)
}

#[test]
fn runtimes_run_while_the_write_back_is_held() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = TempDir::new("bg-held");
    let path = dir.file("c.xnncache");
    let (model, other) = (fc_qd8_qc4w(), conv2d());
    let (expected, expected_other) = (model.run(std::ptr::null_mut()), other.run(std::ptr::null_mut()));
    let cache = Cache::open(Some(&path));
    model.register(&cache, true);
    other.register(&cache, true);
    let mut rt = model.create(cache.provider()).unwrap();

    // Hold the write-back after its first piece reached the file.
    let mut held = Held::at("seal: staged bytes written to the file", "xnncache-writeback");
    cache.start_finalize();
    held.reached("a write-back on the cache's background thread");

    // finalize has returned; the write-back is under way and held.
    assert_eq!(xnncache_wait(cache.0, 0), Status::XNNCACHE_BUSY);
    let s = cache.stats();
    assert!(s.pending_bytes > 0, "{s:?}");
    assert_eq!((s.commits, s.last_commit_unix_ms), (0, 0), "{s:?}");
    // The runtime runs on its packed weights, a second runtime packs and runs.
    assert_eq!(rt.infer().unwrap(), expected, "inference during the write-back");
    let mut counting = Counting::wrap(cache.provider());
    assert_eq!(other.run(counting.provider()), expected_other, "a runtime created during the write-back");
    assert!(counting.reserves.load(Ordering::Relaxed) > 0);

    held.release();
    assert_eq!(xnncache_wait(cache.0, u32::MAX), Status::XNNCACHE_OK, "{}", last_error());
    drop(held);
    let s = cache.stats();
    assert_eq!(s.commits, 1, "{s:?}");
    assert!(s.last_commit_unix_ms > 0);
    // The second runtime's weights wait for the next finalize.
    assert!(s.pending_bytes > 0, "{s:?}");
    cache.finalize();
    let s = cache.stats();
    assert_eq!((s.commits, s.pending_bytes), (2, 0), "{s:?}");
    assert_eq!(rt.infer().unwrap(), expected, "inference after the pages were swapped for the file's");
    let (_, dirty, _) = file_mapping_usage(&dir.0);
    assert_eq!(dirty, 0, "dirty bytes in the cache file's pages after the write-back");
    drop(rt);
    drop(cache);
    let next = open_read_only(&path);
    assert_eq!(next.stats().loaded_entries, s.entries, "the next launch finds both runtimes' weights");
}

#[test]
fn a_failed_write_back_keeps_the_runtime_and_the_last_commit() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = TempDir::new("bg-fail");
    let path = dir.file("c.xnncache");
    let (first, second) = (fc_f32_bias(), conv2d());
    let expected = second.run(std::ptr::null_mut());
    let cache = Cache::open(Some(&path));
    first.register(&cache, true);
    second.register(&cache, true);
    first.run(cache.provider());
    cache.finalize();
    let committed = cache.stats().entries;

    let mut rt = second.create(cache.provider()).unwrap();
    xnncache::fault::fail_next("seal: write");
    assert_eq!(xnncache::capi::xnncache_finalize(cache.0), Status::XNNCACHE_OK, "finalize reports no write-back error");
    assert_eq!(xnncache_wait(cache.0, u32::MAX), Status::XNNCACHE_IO_ERROR);
    assert!(last_error().contains("cannot write the cache file"), "{}", last_error());
    assert_eq!(rt.infer().unwrap(), expected, "the runtime keeps its weights in memory");
    assert_eq!(cache.stats().commits, 1);
    // A later write-back that has nothing to fail on cannot make the file
    // take this cache's weights again: the error stays.
    let third = fc_qd8_qc4w();
    let expected_third = third.run(std::ptr::null_mut());
    assert_eq!(third.run(cache.provider()), expected_third);
    assert_eq!(xnncache::capi::xnncache_finalize(cache.0), Status::XNNCACHE_OK);
    assert_eq!(xnncache_wait(cache.0, u32::MAX), Status::XNNCACHE_IO_ERROR, "the failure was forgotten");
    assert_eq!(cache.stats().commits, 1);
    drop(rt);
    drop(cache);
    let next = open_read_only(&path);
    let s = next.stats();
    assert_eq!(s.file_state, xnncache::store::FileState::XNNCACHE_FILE_REUSED as u32, "{}", last_error());
    assert_eq!(s.loaded_entries, committed, "the file keeps its last commit");
}

#[test]
fn closing_waits_for_the_commit() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = TempDir::new("bg-close");
    let path = dir.file("c.xnncache");
    let model = fc_qd8_qc4w();
    let cache = Cache::open(Some(&path));
    model.register(&cache, true);
    model.run(cache.provider());
    cache.start_finalize();
    let entries = cache.stats().entries;
    drop(cache); // no wait
    let next = open_read_only(&path);
    assert_eq!(next.stats().loaded_entries, entries);
}

/// A background write-back yields to the host's computation: while a thread
/// of the process computes, nothing is written (for the 400 ms looked at,
/// well inside the 10 s it yields at most); once the thread stops, the
/// commit follows with no one waiting for it. With
/// `XNNCACHE_FLAG_EAGER_WRITEBACK` the commit comes while the thread still
/// computes, and `xnncache_wait` and `xnncache_compact` end the yielding at once. In a child
/// process: other tests' threads would count as computation.
#[test]
fn the_write_back_yields_to_computation_until_the_process_is_quiet() {
    let dir = TempDir::new("bg-yield");
    for (mode, flags) in [("yield", "0"), ("eager", "128"), ("waited", "0"), ("compacted", "0")] {
        let path = dir.file(&format!("{mode}.xnncache"));
        let env = [("XNNCACHE_T_PATH", path.to_str().unwrap()), ("XNNCACHE_T_MODE", mode), ("XNNCACHE_T_FLAGS", flags)];
        let out = xnncache_tests::run_child("child_yields_to_computation", &env, None);
        assert!(
            out.status.success(),
            "{mode}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
#[ignore = "run in a child process by the_write_back_yields_to_computation_until_the_process_is_quiet"]
fn child_yields_to_computation() {
    use std::sync::atomic::AtomicBool;
    use std::time::{Duration, Instant};
    let path = std::path::PathBuf::from(std::env::var("XNNCACHE_T_PATH").unwrap());
    let mode = std::env::var("XNNCACHE_T_MODE").unwrap();
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let mut o = options(Some(&c));
    o.flags |= std::env::var("XNNCACHE_T_FLAGS").unwrap().parse::<u32>().unwrap();
    let cache = Cache::open_with(&o);
    let model = fc_f32_bias();
    let expected = model.run(std::ptr::null_mut());
    model.register(&cache, true);
    let mut rt = model.create(cache.provider()).unwrap();

    let computing = std::sync::Arc::new(AtomicBool::new(true));
    let flag = std::sync::Arc::clone(&computing);
    let spinner = std::thread::spawn(move || compute_while(&flag));
    cache.start_finalize();
    let committed_within = |limit: Duration| {
        let start = Instant::now();
        while start.elapsed() < limit {
            if cache.stats().commits > 0 {
                return true;
            }
            // Polling must not be computation itself: it would keep the
            // write-back yielding.
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    };
    let yielding = || {
        // The write-back thread waits, `finalizing` held (the first look
        // always waits one window).
        let start = Instant::now();
        while xnncache::fault::counted("write-back: yields") == 0 {
            assert!(start.elapsed() < Duration::from_secs(5), "the write-back never yielded");
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    match mode.as_str() {
        "yield" => {
            yielding();
            assert!(!committed_within(Duration::from_millis(400)), "committed while a thread computed: {:?}", cache.stats());
            assert!(cache.stats().pending_bytes > 0);
            computing.store(false, Ordering::Relaxed);
            spinner.join().unwrap();
            // Well before the 10 s after which it would go ahead anyway.
            assert!(committed_within(Duration::from_secs(5)), "no commit once quiet: {:?}", cache.stats());
        }
        "eager" => {
            assert!(committed_within(Duration::from_secs(5)), "an eager write-back waited: {:?}", cache.stats());
            computing.store(false, Ordering::Relaxed);
            spinner.join().unwrap();
        }
        "compacted" => {
            // A compaction that finds the write-back yielding ends that.
            yielding();
            let start = Instant::now();
            assert_eq!(xnncache::capi::xnncache_compact(cache.0), Status::XNNCACHE_OK, "{}", last_error());
            assert!(start.elapsed() < Duration::from_secs(5), "xnncache_compact took {:?}", start.elapsed());
            // Whichever took the file first, nothing is left to wait for.
            assert_eq!(xnncache_wait(cache.0, u32::MAX), Status::XNNCACHE_OK, "{}", last_error());
            assert!(start.elapsed() < Duration::from_secs(5), "compact and wait took {:?}", start.elapsed());
            computing.store(false, Ordering::Relaxed);
            spinner.join().unwrap();
        }
        _ => {
            let start = Instant::now();
            assert_eq!(xnncache_wait(cache.0, u32::MAX), Status::XNNCACHE_OK, "{}", last_error());
            assert!(start.elapsed() < Duration::from_secs(5), "xnncache_wait took {:?}", start.elapsed());
            assert_eq!(cache.stats().commits, 1);
            computing.store(false, Ordering::Relaxed);
            spinner.join().unwrap();
        }
    }
    assert_eq!(rt.infer().unwrap(), expected);
}

/// A process that exits normally while its write-back still yields (a
/// thread computes to the end, the cache is never closed) finishes that
/// write-back on its way out: the next process finds every weight.
#[test]
fn an_exit_while_the_write_back_yields_still_commits() {
    let dir = TempDir::new("bg-exit");
    let path = dir.file("exit.xnncache");
    let out = xnncache_tests::run_child("child_exits_while_computing", &[("XNNCACHE_T_PATH", path.to_str().unwrap())], None);
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("not committed before exit"), "{}", String::from_utf8_lossy(&out.stdout));
    let cache = Cache::open(Some(&path));
    let model = fc_f32_bias();
    model.register(&cache, true);
    let _rt = model.create(cache.provider()).unwrap();
    let s = cache.stats();
    assert_eq!(s.file_state, xnncache::store::FileState::XNNCACHE_FILE_REUSED as u32, "{s:?} {}", last_error());
    assert_eq!(s.packed_bytes, 0, "{s:?}");
}

#[test]
#[ignore = "run in a child process by an_exit_while_the_write_back_yields_still_commits"]
fn child_exits_while_computing() {
    let path = std::path::PathBuf::from(std::env::var("XNNCACHE_T_PATH").unwrap());
    let cache = Cache::open(Some(&path));
    let model = fc_f32_bias();
    model.register(&cache, true);
    let rt = model.create(cache.provider()).unwrap();
    // Computes until the process exits.
    std::thread::spawn(|| compute_while(&std::sync::atomic::AtomicBool::new(true)));
    cache.start_finalize();
    let s = cache.stats();
    assert_eq!(s.commits, 0, "{s:?}");
    println!("not committed before exit");
    // Neither closed nor waited for: the test harness exits the process.
    std::mem::forget(rt);
    std::mem::forget(cache);
}

/// Keeps one core busy, as a host's inference would, while `flag` is set.
fn compute_while(flag: &std::sync::atomic::AtomicBool) {
    let mut x = 1u64;
    while flag.load(Ordering::Relaxed) {
        for _ in 0..10_000 {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
    }
}
