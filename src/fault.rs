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
    use std::sync::OnceLock;

    static PASSED: AtomicU64 = AtomicU64::new(0);

    pub fn point(name: &str) {
        static CRASH_AT: OnceLock<Option<u64>> = OnceLock::new();
        let n = PASSED.fetch_add(1, Ordering::SeqCst) + 1;
        let at = *CRASH_AT.get_or_init(|| std::env::var("XNNCACHE_CRASH_AT").ok().and_then(|v| v.parse().ok()));
        if at == Some(n) {
            eprintln!("xnncache: crash point {n} ({name})");
            // SAFETY: getpid and kill have no memory preconditions.
            unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
        }
    }

    pub fn passed() -> u64 {
        PASSED.load(Ordering::SeqCst)
    }
}

#[cfg(not(feature = "fault-injection"))]
mod imp {
    #[inline(always)]
    pub fn point(_name: &str) {}

    pub fn passed() -> u64 {
        0
    }
}

/// A place where a crash must leave a usable (or rebuildable) file.
pub use imp::point;
/// How many points this process has passed.
pub use imp::passed;
