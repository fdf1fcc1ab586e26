//! Eight threads creating, reshaping, setting up and running runtimes over
//! one cache at once, finalizing it as they go.

use std::sync::Barrier;

use xnncache_tests::models::*;
use xnncache_tests::{Cache, TempDir};

#[test]
fn eight_threads_share_one_cache() {
    const THREADS: usize = 8;
    const ROUNDS: usize = 4;
    let models = [mixed(), fc_qd8_qc4w(), conv2d(), deconv2d()];
    let expected: Vec<_> = models.iter().map(|m| m.run(std::ptr::null_mut())).collect();
    let dir = TempDir::new("threads");
    let cache = Cache::open(Some(&dir.file("cache.bin")));
    let start = Barrier::new(THREADS);
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let (models, expected, cache, start) = (&models, &expected, &cache, &start);
            s.spawn(move || {
                start.wait();
                // A runtime set up early keeps being reshaped and run while
                // other threads create theirs over the same cache.
                let m0 = t % models.len();
                let mut early = models[m0].create(cache.provider()).expect("create");
                for round in 0..ROUNDS {
                    let m = (t + round) % models.len();
                    let mut rt = models[m].create(cache.provider()).expect("create");
                    assert_eq!(rt.infer().expect("infer a new runtime"), expected[m]);
                    assert_eq!(early.infer().expect("infer the early runtime again"), expected[m0]);
                    if (t + round) % 3 == 0 {
                        cache.finalize();
                    }
                    assert_eq!(rt.infer().expect("infer again"), expected[m]);
                }
            });
        }
    });
    let s = cache.stats();
    // One entry per operator with static weights (bias packed with its kernel):
    // six in `mixed`, one in each of the three others, however many runtimes.
    let distinct: u64 = 6 + 1 + 1 + 1;
    assert_eq!(s.entries, distinct, "{s:?}");
    assert_eq!(s.heap_fallback_bytes, 0);
    cache.finalize();
    for (m, e) in models.iter().zip(&expected) {
        assert_eq!(&m.run(cache.provider()), e);
    }
}

/// scripts/sanitizers.sh's control for ThreadSanitizer: two threads write one
/// word with no synchronisation at all, on purpose. The script expects TSan to
/// report it (else its build is not instrumented and a clean run means
/// nothing). Not run otherwise: the race is deliberate, and harmless only in
/// the sense that nobody reads the word.
#[test]
#[ignore = "run by scripts/sanitizers.sh tsan, which expects ThreadSanitizer to report it"]
fn tsan_control_a_deliberate_race() {
    let word = Box::into_raw(Box::new(0u64)) as usize;
    let other = std::thread::spawn(move || {
        // SAFETY: not sound, deliberately: this is the race TSan must see.
        unsafe { std::ptr::write_volatile(word as *mut u64, 1) };
    });
    // SAFETY: as above.
    unsafe { std::ptr::write_volatile(word as *mut u64, 2) };
    other.join().unwrap();
}
