//! A cache across the life of its process (issue 26): `fork()` while the
//! write-back yields, `exit()` from a log callback on the write-back thread
//! and from a signal handler while a cache lock is held, and what waits for
//! the yielding write-back (`xnncache_wait` during a prefetch, the exit
//! handler with several caches).
//!
//! Every test runs in a child process of its own (other tests' threads
//! would count as computation, and exits and forks must not take the test
//! harness with them). What the exit handler did is printed by an `atexit`
//! handler of the test, registered before xnncache's (so it runs after it),
//! from xnncache's fault counters: structural, not timed.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use xnncache::capi::{xnncache_compact, xnncache_finalize, xnncache_wait, XNNCACHE_FLAG_SYNC_WRITEBACK};
use xnncache::store::FileState;
use xnncache::Status;
use xnncache_tests::models::{conv2d, fc_f32_bias};
use xnncache_tests::{last_error, options, run_child, Backing, Cache, Held, TempDir};

/// Keeps one core busy, as a host's inference would, while `flag` is set.
fn compute_while(flag: &AtomicBool) {
    let mut x = 1u64;
    while flag.load(Ordering::Relaxed) {
        for _ in 0..10_000 {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
    }
}

/// A thread computing until the returned flag is cleared (or the process ends).
fn spinner() -> (Arc<AtomicBool>, std::thread::JoinHandle<()>) {
    let computing = Arc::new(AtomicBool::new(true));
    let flag = Arc::clone(&computing);
    (computing, std::thread::spawn(move || compute_while(&flag)))
}

/// Returns once a background write-back of this process has yielded `n`
/// times (it waits, `finalizing` held, while a thread computes).
fn yielded(n: u64) {
    let start = Instant::now();
    while xnncache::fault::counted("write-back: yields") < n {
        assert!(start.elapsed() < Duration::from_secs(60), "the write-back never yielded");
        // Polling must not be computation itself.
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn open_flags(path: &std::path::Path, flags: u32) -> Cache {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let mut o = options(Some(&c));
    o.flags |= flags;
    Cache::open_with(&o)
}

fn env_path(name: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(std::env::var(name).unwrap())
}

fn check(out: &std::process::Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "child failed ({:?}):\n{stdout}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    stdout
}

/// The counters the exit report prints, and whether it runs in this process.
static REPORT: &[&str] = &[
    "exit: a cache of the parent process skipped",
    "exit: on the cache's own write-back thread, not waited for",
    "exit: a lock of the cache is held by the exiting thread, not waited for",
    "write-back: hurried",
];
/// What the fault hook saw at the exit handler's first wait: the number of
/// write-backs hurried by then, plus one (0: it never waited).
static HURRIED_AT_FIRST_WAIT: AtomicU64 = AtomicU64::new(0);

/// Registers the exit report: an `atexit` handler registered before
/// xnncache's (call it before the first finalize), so it runs after it, and
/// prints what xnncache's exit handler did.
fn report_at_exit() {
    extern "C" fn report() {
        let _ = std::panic::catch_unwind(|| {
            use std::io::Write;
            let mut line = format!("exit report of {}:", std::process::id());
            for what in REPORT {
                line += &format!(" [{what}] = {};", xnncache::fault::counted(what));
            }
            line += &format!(" [hurried at the first wait] = {};", HURRIED_AT_FIRST_WAIT.load(Ordering::SeqCst) as i64 - 1);
            // Straight to the descriptor: nothing buffered is flushed after this.
            let _ = writeln!(std::io::stdout().lock(), "{line}");
        });
    }
    // SAFETY: registers a function that lives as long as the process.
    assert_eq!(unsafe { libc::atexit(report) }, 0);
}

/// What the exit report of process `pid` (or any, with `None`) says of `what`.
fn reported(stdout: &str, pid: Option<u32>, what: &str) -> i64 {
    let prefix = pid.map_or("exit report of ".to_string(), |p| format!("exit report of {p}:"));
    // (A line may follow the test harness's "test name ... " on the same line.)
    let line = stdout.lines().find_map(|l| l.find(&prefix).map(|at| &l[at..])).unwrap_or_else(|| panic!("no exit report ({prefix}) in:\n{stdout}"));
    let field = format!("[{what}] = ");
    let at = line.find(&field).unwrap_or_else(|| panic!("{what} not in {line}")) + field.len();
    line[at..].split(';').next().unwrap().parse().unwrap()
}

// ---------------------------------------------------------------- fork()

/// A process whose write-back yields (a thread computes) forks. In the
/// child, the parent's cache answers: the runtime created before the fork
/// computes, a new runtime packs on the child's heap and computes; finalize
/// and wait return at once (`XNNCACHE_OK`), compact refuses, close returns,
/// and exit skips the parent's write-back; a cache the child opens itself
/// persists. The parent still holds its writer lock after the child closed
/// the cache and exited, and commits. Before issue 26 the child's
/// `xnncache_wait` never returned (the deadlock detector below kills it).
#[test]
fn a_forked_child_uses_its_parents_cache_in_memory_and_returns_promptly() {
    let dir = TempDir::new("life-fork");
    let (path, own) = (dir.file("parent.xnncache"), dir.file("child.xnncache"));
    let env = [("XNNCACHE_T_PATH", path.to_str().unwrap()), ("XNNCACHE_T_OWN", own.to_str().unwrap())];
    let stdout = check(&run_child("child_forks_while_the_write_back_yields", &env, None));
    assert!(stdout.contains("forked child: done"), "{stdout}");
    let child: u32 = stdout.lines().find_map(|l| l.split("forked child pid ").nth(1)).expect("the child's pid").parse().unwrap();
    assert!(reported(&stdout, Some(child), REPORT[0]) >= 1, "the child's exit did not skip the parent's cache:\n{stdout}");
    // The parent's weights and the child's own cache are both in their files.
    for (p, model) in [(&path, fc_f32_bias()), (&own, conv2d())] {
        let cache = Cache::open(Some(p));
        model.register(&cache, true);
        let _rt = model.create(cache.provider()).unwrap();
        let s = cache.stats();
        assert_eq!(s.file_state, FileState::XNNCACHE_FILE_REUSED as u32, "{}: {s:?} {}", p.display(), last_error());
        assert_eq!(s.packed_bytes, 0, "{}: {s:?}", p.display());
    }
}

#[test]
#[ignore = "run in a child process by a_forked_child_uses_its_parents_cache_in_memory_and_returns_promptly"]
fn child_forks_while_the_write_back_yields() {
    report_at_exit();
    let (path, own) = (env_path("XNNCACHE_T_PATH"), env_path("XNNCACHE_T_OWN"));
    let (model, other) = (fc_f32_bias(), conv2d());
    let (expected, expected_other) = (model.run(std::ptr::null_mut()), other.run(std::ptr::null_mut()));
    let cache = Cache::open(Some(&path));
    model.register(&cache, true);
    let mut rt = model.create(cache.provider()).unwrap();
    let (computing, spin) = spinner();
    cache.start_finalize();
    yielded(1);

    // SAFETY: the child runs Rust code after fork() in a multi-threaded
    // process, as the hosts this test stands for do; xnncache's fork
    // handlers leave its locks free, glibc's its allocator's.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            println!("forked child pid {}", std::process::id());
            assert_eq!(rt.infer().unwrap(), expected, "the runtime created before the fork");
            // Nothing of the child's to wait for (the parent's write-back is not here).
            assert_eq!(xnncache_wait(cache.0, u32::MAX), Status::XNNCACHE_OK, "{}", last_error());
            let mut rt2 = other.create(cache.provider()).unwrap();
            assert_eq!(rt2.infer().unwrap(), expected_other, "a runtime created in the child");
            assert_eq!(cache.stats().backing, Backing::XNNCACHE_BACKING_HEAP as u32, "new packings go to the child's heap");
            assert_eq!(xnncache_finalize(cache.0), Status::XNNCACHE_OK, "{}", last_error());
            assert_eq!(xnncache_wait(cache.0, u32::MAX), Status::XNNCACHE_OK, "{}", last_error());
            assert_eq!(xnncache_compact(cache.0), Status::XNNCACHE_INVALID_STATE);
            assert_eq!(rt2.infer().unwrap(), expected_other);
            // A cache of its own persists (synchronously: no thread is
            // started in a forked child, which ThreadSanitizer refuses).
            let mine = open_flags(&own, XNNCACHE_FLAG_SYNC_WRITEBACK);
            other.register(&mine, true);
            assert_eq!(other.run(mine.provider()), expected_other);
            mine.finalize();
            assert_eq!(mine.stats().commits, 1, "{:?}", mine.stats());
            drop(mine);
            drop((rt, rt2));
            drop(cache); // xnncache_close: joins nothing, touches nothing of the file
            println!("forked child: done");
        }));
        // SAFETY: exit runs the atexit handlers (xnncache's, then the report).
        unsafe { libc::exit(if code.is_ok() { 0 } else { 1 }) };
    }
    // A deadlock detector, not a synchronisation: a child that hangs is killed.
    let mut status = 0;
    let start = Instant::now();
    loop {
        // SAFETY: waitpid writes the status of our own child.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            break;
        }
        if start.elapsed() > Duration::from_secs(60) {
            // SAFETY: our own child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("the forked child hung (xnncache_wait, close or exit waited for the parent's write-back)");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "the forked child failed: status {status:#x}");

    // The child neither unlocked the parent's writer lock nor wrote the file.
    let lock = std::fs::OpenOptions::new().read(true).open(format!("{}.lock", path.display())).unwrap();
    // SAFETY: flock on a descriptor of our own.
    let taken = unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX | libc::LOCK_NB) } == 0;
    assert!(!taken, "the parent's writer lock was released by the child");
    assert_eq!(cache.stats().commits, 0);
    computing.store(false, Ordering::Relaxed);
    spin.join().unwrap();
    cache.wait();
    assert_eq!(cache.stats().commits, 1);
    assert_eq!(rt.infer().unwrap(), expected);
}

// ---------------------------------------------------------------- exit()

/// `exit()` from the log callback, on the write-back thread (a failed
/// write-back is logged there): the exit handler does not wait for the
/// thread it runs on (before issue 26 it waited 10 s for itself).
#[test]
fn exit_from_the_log_callback_on_the_write_back_thread() {
    let dir = TempDir::new("life-exit-log");
    let path = dir.file("c.xnncache");
    let stdout = check(&run_child("child_exits_from_the_log_callback", &[("XNNCACHE_T_PATH", path.to_str().unwrap())], None));
    assert!(stdout.contains("exit() from the write-back thread"), "the callback never ran:\n{stdout}");
    assert_eq!(reported(&stdout, None, REPORT[1]), 1, "the exit handler waited for its own thread:\n{stdout}");
}

#[test]
#[ignore = "run in a child process by exit_from_the_log_callback_on_the_write_back_thread"]
fn child_exits_from_the_log_callback() {
    unsafe extern "C" fn on_log(_level: xnncache::logging::Level, _message: *const std::ffi::c_char, _user: *mut std::ffi::c_void) {
        if std::thread::current().name() == Some("xnncache-writeback") {
            println!("exit() from the write-back thread");
            // SAFETY: what the host this test stands for does.
            unsafe { libc::exit(0) };
        }
    }
    report_at_exit();
    let path = env_path("XNNCACHE_T_PATH");
    xnncache::capi::xnncache_set_log_callback(Some(on_log), std::ptr::null_mut());
    let cache = Cache::open(Some(&path));
    let model = fc_f32_bias();
    model.register(&cache, true);
    let rt = model.create(cache.provider()).unwrap();
    xnncache::fault::fail_next("seal: write");
    cache.start_finalize();
    // The write-back fails, logs, and the callback exits the process.
    let _ = xnncache_wait(cache.0, u32::MAX);
    std::mem::forget(rt);
    std::mem::forget(cache);
    panic!("the process should have exited from the log callback");
}

/// `exit()` from a signal handler that interrupted a thread holding a
/// cache's state lock, while that cache's write-back is asked for: the exit
/// handler does not wait for a write-back that needs that lock (before issue
/// 26 it waited 10 s, the write-back blocked on the lock).
#[test]
fn exit_from_a_signal_handler_while_a_cache_lock_is_held() {
    let dir = TempDir::new("life-exit-signal");
    let path = dir.file("c.xnncache");
    let stdout = check(&run_child("child_exits_from_a_signal_handler", &[("XNNCACHE_T_PATH", path.to_str().unwrap())], None));
    assert!(stdout.contains("raising the signal"), "{stdout}");
    assert_eq!(reported(&stdout, None, REPORT[2]), 1, "the exit handler waited for a lock its own thread holds:\n{stdout}");
}

#[test]
#[ignore = "run in a child process by exit_from_a_signal_handler_while_a_cache_lock_is_held"]
fn child_exits_from_a_signal_handler() {
    extern "C" fn on_signal(_: libc::c_int) {
        // SAFETY: not async-signal-safe, and what the host this test stands for does.
        unsafe { libc::exit(0) };
    }
    report_at_exit();
    // SAFETY: installs a handler that lives as long as the process.
    unsafe { libc::signal(libc::SIGUSR1, on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t) };
    let path = env_path("XNNCACHE_T_PATH");
    let cache = Cache::open(Some(&path));
    let (model, other) = (fc_f32_bias(), conv2d());
    model.register(&cache, true);
    other.register(&cache, true);
    let rt = model.create(cache.provider()).unwrap();
    let (_computing, _spin) = spinner();
    cache.start_finalize();
    yielded(1);
    // The next weight stored (under the state lock) on this thread raises the signal.
    let me = std::thread::current().id();
    xnncache::fault::set_hook(Some(Box::new(move |point| {
        if point == "insert: entry stored" && std::thread::current().id() == me {
            println!("raising the signal");
            // SAFETY: raise has no memory preconditions.
            unsafe { libc::raise(libc::SIGUSR1) };
        }
    })));
    let _ = other.create(cache.provider());
    std::mem::forget(rt);
    std::mem::forget(cache);
    panic!("the process should have exited from the signal handler");
}

// ---------------------------------------------------------------- yielding

/// `xnncache_wait` with a timeout during a warm launch's prefetch ends the
/// write-back's yielding first, and even when the time runs out inside the
/// prefetch (before issue 26 it waited for the prefetch first, and returned
/// `XNNCACHE_BUSY` leaving the write-back yielding).
#[test]
fn a_wait_ends_the_yielding_before_waiting_for_the_prefetch() {
    let dir = TempDir::new("life-wait-prefetch");
    let path = dir.file("c.xnncache");
    let stdout = check(&run_child("child_waits_during_a_prefetch", &[("XNNCACHE_T_PATH", path.to_str().unwrap())], None));
    assert!(stdout.contains("waited"), "{stdout}");
}

#[test]
#[ignore = "run in a child process by a_wait_ends_the_yielding_before_waiting_for_the_prefetch"]
fn child_waits_during_a_prefetch() {
    let path = env_path("XNNCACHE_T_PATH");
    let (model, other) = (fc_f32_bias(), conv2d());
    let expected_other = other.run(std::ptr::null_mut());
    {
        let cache = Cache::open(Some(&path));
        model.register(&cache, true);
        model.run(cache.provider());
        cache.finalize();
    }
    // A warm launch whose prefetch is held at its first chunk (the file is
    // in the page cache: the test makes it look evicted).
    xnncache::fault::fail_next("prefetch: the file looks resident");
    let held = Held::at("prefetch: chunk", "xnncache-prefetch");
    let cache = Cache::open(Some(&path));
    // Released before the cache is closed, even if an assertion fails (a
    // close joins the prefetch thread).
    let mut held = held;
    held.reached("the prefetch");
    model.register(&cache, true);
    other.register(&cache, true);
    let mut rt = other.create(cache.provider()).unwrap();
    let (computing, spin) = spinner();
    cache.start_finalize();
    yielded(1);
    let before = xnncache::fault::counted("write-back: hurried");
    assert_eq!(xnncache_wait(cache.0, 50), Status::XNNCACHE_BUSY, "the prefetch is held");
    assert_eq!(xnncache::fault::counted("write-back: hurried"), before + 1, "a wait whose time ran out in the prefetch left the write-back yielding");
    held.release();
    assert_eq!(xnncache_wait(cache.0, u32::MAX), Status::XNNCACHE_OK, "{}", last_error());
    assert_eq!(cache.stats().commits, 1);
    assert_eq!(rt.infer().unwrap(), expected_other);
    computing.store(false, Ordering::Relaxed);
    spin.join().unwrap();
    println!("waited");
}

/// A process exits with two caches whose write-backs yield: the exit
/// handler hurries both before waiting for the first (before issue 26 it
/// hurried and waited for one at a time, the later ones yielding while the
/// shared 10 s ran out), and both commit.
#[test]
fn the_exit_handler_hurries_every_cache_before_waiting() {
    let dir = TempDir::new("life-exit-two");
    let (a, b) = (dir.file("a.xnncache"), dir.file("b.xnncache"));
    let env = [("XNNCACHE_T_A", a.to_str().unwrap()), ("XNNCACHE_T_B", b.to_str().unwrap())];
    let stdout = check(&run_child("child_exits_with_two_yielding_caches", &env, None));
    assert_eq!(reported(&stdout, None, "hurried at the first wait"), 2, "{stdout}");
    for (p, model) in [(&a, fc_f32_bias()), (&b, conv2d())] {
        let cache = Cache::open(Some(p));
        model.register(&cache, true);
        let _rt = model.create(cache.provider()).unwrap();
        let s = cache.stats();
        assert_eq!(s.file_state, FileState::XNNCACHE_FILE_REUSED as u32, "{}: {s:?} {}", p.display(), last_error());
        assert_eq!(s.packed_bytes, 0, "{}: {s:?}", p.display());
    }
}

#[test]
#[ignore = "run in a child process by the_exit_handler_hurries_every_cache_before_waiting"]
fn child_exits_with_two_yielding_caches() {
    report_at_exit();
    let (a, b) = (env_path("XNNCACHE_T_A"), env_path("XNNCACHE_T_B"));
    let (ca, cb) = (Cache::open(Some(&a)), Cache::open(Some(&b)));
    let (ma, mb) = (fc_f32_bias(), conv2d());
    ma.register(&ca, true);
    mb.register(&cb, true);
    let (ra, rb) = (ma.create(ca.provider()).unwrap(), mb.create(cb.provider()).unwrap());
    // Computes until the process exits.
    let (_computing, _spin) = spinner();
    ca.start_finalize();
    cb.start_finalize();
    yielded(2);
    xnncache::fault::set_hook(Some(Box::new(|point| {
        if point == "exit: waiting for a write-back" {
            let hurried = xnncache::fault::counted("write-back: hurried");
            let _ = HURRIED_AT_FIRST_WAIT.compare_exchange(0, hurried + 1, Ordering::SeqCst, Ordering::SeqCst);
        }
    })));
    assert_eq!(xnncache::fault::counted("write-back: hurried"), 0);
    // Neither closed nor waited for: the test harness exits the process.
    std::mem::forget((ra, rb, ca, cb));
}

/// A launch on the same path while another's write-back yields: the
/// yielding write-back keeps the inter-process writer lock (its process has
/// held it since it packed into the file, and its commit must cover that),
/// so the second launch finds the last commit but persists nothing new; a
/// later launch finds the first one's weights and packs the second's again.
/// (Pins what RELIABILITY.md says; the two "processes" are two opens of the
/// path, each with its own lock description, as in interleaving.rs.)
#[test]
fn a_launch_during_a_yielding_write_back_persists_nothing_new() {
    let dir = TempDir::new("life-second-launch");
    let path = dir.file("c.xnncache");
    let stdout = check(&run_child("child_launches_during_a_yielding_write_back", &[("XNNCACHE_T_PATH", path.to_str().unwrap())], None));
    assert!(stdout.contains("second launch done"), "{stdout}");
    let (first, second) = (conv2d(), xnncache_tests::models::fc_qd8_qc4w());
    let cache = Cache::open(Some(&path));
    first.register(&cache, true);
    second.register(&cache, true);
    let _a = first.create(cache.provider()).unwrap();
    assert_eq!(cache.stats().packed_bytes, 0, "the yielding launch's weights are in the file: {:?}", cache.stats());
    let _b = second.create(cache.provider()).unwrap();
    assert!(cache.stats().packed_bytes > 0, "the second launch's weights were persisted: {:?}", cache.stats());
}

#[test]
#[ignore = "run in a child process by a_launch_during_a_yielding_write_back_persists_nothing_new"]
fn child_launches_during_a_yielding_write_back() {
    let path = env_path("XNNCACHE_T_PATH");
    let (base, first, second) = (fc_f32_bias(), conv2d(), xnncache_tests::models::fc_qd8_qc4w());
    let expected = second.run(std::ptr::null_mut());
    {
        let cache = Cache::open(Some(&path));
        base.register(&cache, true);
        base.run(cache.provider());
        cache.finalize();
    }
    let one = Cache::open(Some(&path));
    base.register(&one, true);
    first.register(&one, true);
    let _rt = first.create(one.provider()).unwrap();
    let (computing, spin) = spinner();
    one.start_finalize();
    yielded(1);
    {
        let two = Cache::open(Some(&path));
        base.register(&two, true);
        second.register(&two, true);
        let _found = base.create(two.provider()).unwrap();
        assert_eq!(two.stats().packed_bytes, 0, "the last commit is found: {:?}", two.stats());
        assert_eq!(second.run(two.provider()), expected);
        two.finalize();
        let s = two.stats();
        // (Within the 10 s the first launch's write-back yields at most.)
        assert!(s.not_persisted > 0 && s.commits == 0, "{s:?} (first launch: {:?})", one.stats());
    }
    println!("second launch done");
    computing.store(false, Ordering::Relaxed);
    spin.join().unwrap();
    one.wait();
    assert_eq!(one.stats().commits, 1);
}

/// Forks, again and again, while three threads use two caches through the
/// C API (create and run runtimes, register, finalize, wait, stats): the
/// fork handlers take every cache's short locks in one order while those
/// threads take them in theirs. Each child uses both caches (a runtime
/// created before the fork, stats, finalize, wait, close) and exits. A
/// deadlock (of a fork, or of a child) is caught by the detectors; every
/// child must exit 0.
#[test]
fn forks_while_threads_use_the_caches() {
    let dir = TempDir::new("life-fork-threads");
    let env = [("XNNCACHE_T_DIR", dir.0.to_str().unwrap())];
    let stdout = check(&run_child("child_forks_while_threads_use_the_caches", &env, None));
    assert!(stdout.contains("forks: done"), "{stdout}");
}

#[test]
#[ignore = "run in a child process by forks_while_threads_use_the_caches"]
fn child_forks_while_threads_use_the_caches() {
    use xnncache::capi::{xnncache_close, xnncache_stats};
    let forks: usize = std::env::var("XNNCACHE_BATTERY_FORKS").ok().and_then(|v| v.parse().ok()).unwrap_or(20);
    let dir = env_path("XNNCACHE_T_DIR");
    let caches = Arc::new([Cache::open(Some(&dir.join("a.xnncache"))), Cache::open(Some(&dir.join("b.xnncache")))]);
    let models = Arc::new([fc_f32_bias(), conv2d()]);
    let expected = models[0].run(std::ptr::null_mut());
    models[0].register(&caches[0], true);
    models[1].register(&caches[1], true);
    let mut rt = models[0].create(caches[0].provider()).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..3)
        .map(|i| {
            let (caches, models, stop) = (Arc::clone(&caches), Arc::clone(&models), Arc::clone(&stop));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let (cache, model) = (&caches[i % 2], &models[i % 2]);
                    match i {
                        0 | 1 => {
                            let mut r = model.create(cache.provider()).unwrap();
                            r.infer().unwrap();
                            assert_eq!(xnncache_finalize(cache.0), Status::XNNCACHE_OK);
                        }
                        _ => {
                            model.register(cache, true);
                            let _ = xnncache_wait(cache.0, 1);
                            let mut s = xnncache::Stats::default();
                            assert_eq!(xnncache_stats(caches[1].0, &mut s), Status::XNNCACHE_OK);
                        }
                    }
                }
            })
        })
        .collect();
    for round in 0..forks {
        // SAFETY: as in child_forks_while_the_write_back_yields; the child
        // touches no lock of the test's own (models, stdout) that a worker
        // could hold.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                assert_eq!(rt.infer().unwrap(), expected);
                for c in caches.iter() {
                    let mut s = xnncache::Stats::default();
                    assert_eq!(xnncache_stats(c.0, &mut s), Status::XNNCACHE_OK);
                    assert_eq!(xnncache_finalize(c.0), Status::XNNCACHE_OK);
                    assert_eq!(xnncache_wait(c.0, u32::MAX), Status::XNNCACHE_OK);
                }
                // (The runtime is not deleted: the process ends here.)
                for c in caches.iter() {
                    xnncache_close(c.0);
                }
            }))
            .is_ok();
            // SAFETY: exit runs the atexit handlers (xnncache's skips these caches).
            unsafe { libc::exit(if ok { 0 } else { 1 }) };
        }
        let mut status = 0;
        let start = Instant::now();
        loop {
            // SAFETY: waitpid writes the status of our own child.
            if unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) } == pid {
                break;
            }
            if start.elapsed() > Duration::from_secs(60) {
                // SAFETY: our own child.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                panic!("fork {round}: the child hung");
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "fork {round}: the child failed: status {status:#x}");
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    assert_eq!(rt.infer().unwrap(), expected);
    for c in caches.iter() {
        c.wait();
    }
    println!("forks: done");
}
