//! Address space is reserved when it is needed (issue 18): a launch that only
//! reads reserves about its file's length, not a fixed 8 GiB. (That growth
//! past a reservation keeps addresses is `arena`'s unit tests.) One binary,
//! so that no other test maps memory in the same process while it measures.
//!
//! Measured from `/proc/self/maps` (which qemu-user emulates for its guest),
//! so the test runs natively and under qemu-aarch64 alike.

use xnncache_tests::models::{conv2d, fc_f32_bias, large_fc};
use xnncache_tests::{Cache, TempDir};

/// Bytes of address space mapped or reserved by this process.
fn mapped_bytes() -> u64 {
    let maps = std::fs::read_to_string("/proc/self/maps").expect("/proc/self/maps");
    maps.lines()
        .filter_map(|l| l.split_whitespace().next()?.split_once('-'))
        .filter_map(|(a, b)| Some(u64::from_str_radix(b, 16).ok()? - u64::from_str_radix(a, 16).ok()?))
        .sum()
}

#[test]
fn reservations_follow_what_a_launch_needs() {
    let dir = TempDir::new("address-space");
    let path = dir.file("c.xnncache");
    let models = [fc_f32_bias(), conv2d(), large_fc()];
    let expected: Vec<_> = models.iter().map(|m| m.run(std::ptr::null_mut())).collect();

    // Cold: packs every model into the file (growth room reserved once).
    {
        let cache = Cache::open(Some(&path));
        for (m, want) in models.iter().zip(&expected) {
            m.register(&cache, true);
            assert_eq!(&m.run(cache.provider()), want);
        }
        cache.finalize();
    }
    let file_len = std::fs::metadata(&path).unwrap().len();

    // Warm, default options: everything is found, and the open reserves
    // about the file's length (it used to reserve 8 GiB up front).
    let before = mapped_bytes();
    let cache = Cache::open(Some(&path));
    let opened = mapped_bytes().saturating_sub(before);
    for m in &models {
        m.register(&cache, true);
    }
    let hits_before = cache.stats().hits;
    for (m, want) in models.iter().zip(&expected) {
        assert_eq!(&m.run(cache.provider()), want);
    }
    assert!(cache.stats().hits > hits_before, "{:?}", cache.stats());
    let slack = 64 << 20; // the runtimes' own allocations, page rounding
    assert!(opened <= file_len + slack, "a warm open reserved {opened} bytes of address space for a {file_len}-byte file");
    drop(cache);
}
