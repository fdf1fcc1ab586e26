//! Crash points for the reliability tests.
//!
//! Built with the `fault-injection` feature (the test crate enables it),
//! every call to [`point`] counts, and the process kills itself with SIGKILL
//! at the point whose number is in `XNNCACHE_CRASH_AT`. A test runs a build
//! once to learn how many points it passes, then once per point, killed there,
//! and checks what the next process finds. Without the feature, `point`
//! compiles to nothing.

#[cfg(feature = "fault-injection")]
mod imp {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Mutex, OnceLock};

    static PASSED: AtomicU64 = AtomicU64::new(0);

    type Hook = Box<dyn FnMut(&str) + Send>;
    static HOOK: Mutex<Option<Hook>> = Mutex::new(None);

    /// Runs `hook` at every point (of any thread) until replaced: lets a test
    /// act at an exact moment, e.g. while finalize writes pages outside the
    /// cache's lock. The hook may call into the cache; points it passes then
    /// do not call it again.
    pub fn set_hook(hook: Option<Hook>) {
        *HOOK.lock().unwrap_or_else(|e| e.into_inner()) = hook;
    }

    pub fn point(name: &str) {
        static CRASH_AT: OnceLock<Option<u64>> = OnceLock::new();
        let taken = HOOK.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(mut hook) = taken {
            hook(name);
            let mut slot = HOOK.lock().unwrap_or_else(|e| e.into_inner());
            if slot.is_none() {
                *slot = Some(hook);
            }
        }
        let n = PASSED.fetch_add(1, Ordering::SeqCst) + 1;
        FIRST.lock().unwrap_or_else(|e| e.into_inner()).entry(name.to_string()).or_insert(n);
        let at = *CRASH_AT.get_or_init(|| std::env::var("XNNCACHE_CRASH_AT").ok().and_then(|v| v.parse().ok()));
        if at == Some(n) {
            eprintln!("xnncache: crash point {n} ({name})");
            crate::sys::kill_self();
        }
    }

    pub fn passed() -> u64 {
        PASSED.load(Ordering::SeqCst)
    }

    static FIRST: Mutex<std::collections::BTreeMap<String, u64>> = Mutex::new(std::collections::BTreeMap::new());

    /// The number of the first point called `name` this process passed
    /// (what `XNNCACHE_CRASH_AT` kills there), if it passed one.
    pub fn first_passed(name: &str) -> Option<u64> {
        FIRST.lock().unwrap_or_else(|e| e.into_inner()).get(name).copied()
    }

    static COUNTS: Mutex<std::collections::BTreeMap<&'static str, u64>> = Mutex::new(std::collections::BTreeMap::new());

    /// Counts one system call of a kind the tests watch (see [`counted`]).
    pub fn count(what: &'static str) {
        *COUNTS.lock().unwrap_or_else(|e| e.into_inner()).entry(what).or_default() += 1;
    }

    /// How many times this process made the calls [`count`]ed as `what`.
    pub fn counted(what: &str) -> u64 {
        COUNTS.lock().unwrap_or_else(|e| e.into_inner()).get(what).copied().unwrap_or(0)
    }

    static FAIL: Mutex<Option<(String, i32)>> = Mutex::new(None);

    /// The locks above, held across a `fork()` (see `cache::lifetime`): the
    /// child finds them free. Taken after every lock of a cache (points and
    /// counts are passed under the cache's state lock).
    pub fn freeze() -> Box<dyn std::any::Any> {
        Box::new((
            HOOK.lock().unwrap_or_else(|e| e.into_inner()),
            COUNTS.lock().unwrap_or_else(|e| e.into_inner()),
            FAIL.lock().unwrap_or_else(|e| e.into_inner()),
        ))
    }

    /// Makes the next [`check`] of the step `name` fail with EIO (once).
    pub fn fail_next(name: &str) {
        fail_next_with(name, libc::EIO);
    }

    /// Makes the next [`check`] of the step `name` fail with `errno` (once).
    pub fn fail_next_with(name: &str, errno: i32) {
        *FAIL.lock().unwrap_or_else(|e| e.into_inner()) = Some((name.to_string(), errno));
    }

    /// Whether a failure armed by `fail_next` is still waiting for its step.
    pub fn armed() -> bool {
        FAIL.lock().unwrap_or_else(|e| e.into_inner()).is_some()
    }

    pub fn check(name: &str) -> std::io::Result<()> {
        let mut armed = FAIL.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, errno)) = armed.as_ref().filter(|(n, _)| n == name) {
            let e = std::io::Error::from_raw_os_error(*errno);
            *armed = None;
            return Err(e);
        }
        Ok(())
    }
}

#[cfg(not(feature = "fault-injection"))]
mod imp {
    #[inline(always)]
    pub fn point(_name: &str) {}

    pub fn passed() -> u64 {
        0
    }

    #[inline(always)]
    pub fn count(_what: &'static str) {}

    #[inline(always)]
    pub fn check(_name: &str) -> std::io::Result<()> {
        Ok(())
    }
}

/// A place where a crash must leave a usable (or rebuildable) file.
pub use imp::point;
/// A test's code to run at crash points (only with `fault-injection`).
#[cfg(feature = "fault-injection")]
pub use imp::set_hook;
/// How many points this process has passed.
pub use imp::passed;
/// Counts a watched system call (only with `fault-injection`): the writer
/// lock's `flock`, the creation of its file, a listing of the folder.
pub use imp::count;
/// How many watched calls of a kind this process made.
#[cfg(feature = "fault-injection")]
pub use imp::counted;
/// The number of the first point of a name this process passed.
#[cfg(feature = "fault-injection")]
pub use imp::first_passed;
/// The fault-injection locks, for the fork handlers (only with `fault-injection`).
#[cfg(feature = "fault-injection")]
pub(crate) use imp::freeze;
/// An I/O step a test can make fail (only with `fault-injection`; otherwise Ok).
pub use imp::check;
/// Arms one failure of [`check`] at a named step (EIO, or an errno).
#[cfg(feature = "fault-injection")]
pub use imp::{armed, fail_next, fail_next_with};

/// Every step of the write-back and commit path that [`check`]s, in order:
/// each write and sync between packed bytes in memory and a published commit.
pub const COMMIT_STEPS: &[&str] = &[
    "grow: allocate",
    "seal: write",
    "seal: sync",
    "seal: map file pages",
    "commit: sync payloads and index",
    "commit: write header slot",
    "commit: sync header",
    "commit: rename",
];
