//! What finalize does to memory: clean file pages, no anonymous copy, and
//! read-only pages. One test in its own binary, so that no other test's
//! allocations run in the same process while it measures.

use xnncache_tests::models::large_fc;
use xnncache_tests::{file_mapping_usage, rollup, write_in_child, Cache, TempDir};

#[test]
fn finalized_pages_are_clean_read_only_and_not_anonymous() {
    let model = large_fc();
    let expected = model.run(std::ptr::null_mut());
    let dir = TempDir::new("memory");
    let path = dir.file("cache.bin");

    // Without a cache, XNNPACK's packed copy is anonymous memory: the
    // measurement below can tell the difference.
    let before = rollup("Anonymous");
    let mut plain = model.create(std::ptr::null_mut()).unwrap();
    let plain_growth = rollup("Anonymous").saturating_sub(before);
    assert_eq!(plain.infer().unwrap(), expected);

    let cache = Cache::open(Some(&path));
    let before = rollup("Anonymous");
    let mut rt = model.create(cache.provider()).unwrap();
    // XNNPACK packs into staging memory; finalize moves it into the file.
    let staged = rollup("Anonymous").saturating_sub(before);
    cache.finalize();
    let growth = rollup("Anonymous").saturating_sub(before);
    let packed = cache.stats().stored_bytes;
    assert!(packed >= 4 << 20, "{packed}");
    assert_eq!(rt.infer().unwrap(), expected);
    // Under qemu-user the process's memory figures are qemu's own (its
    // translated code and tables move them by megabytes): scripts/test-arm64.sh
    // says so with XNNCACHE_UNDER_EMULATOR=1, and everything else is checked.
    if std::env::var_os("XNNCACHE_UNDER_EMULATOR").is_some() {
        eprintln!("memory: under an emulator: the anonymous-memory and RSS figures are not checked (they need a native run)");
    } else {
        assert!(plain_growth >= packed * 9 / 10, "without a cache the packed weights ({packed}) should be anonymous, grew {plain_growth}");
        assert!(staged >= packed * 9 / 10, "before finalize the packed weights are staged in anonymous memory ({staged})");
        assert!(growth < packed / 20, "after finalize, anonymous memory grew {growth} bytes for {packed} packed bytes");
        let (rss, dirty, mappings) = file_mapping_usage(&dir.0);
        assert!(mappings >= 1, "the cache file is not mapped");
        assert_eq!(dirty, 0, "dirty bytes in the cache file's mappings after finalize");
        assert!(rss >= packed / 2, "the packed weights should be resident file pages ({rss})");
    }

    // A write into a finalized page faults.
    let packed_addr = xnncache::capi::xnncache_provider(cache.0);
    assert!(!packed_addr.is_null());
    // SAFETY: the provider's offset_to_addr slot is ours; the first payload
    // of a file starts at DATA_START.
    let first = unsafe {
        let p = packed_addr as *mut xnnpack_sys::xnn_weights_cache_provider;
        ((*p).offset_to_addr.unwrap())((*p).context, xnncache::format::DATA_START as usize) as *mut u8
    };
    assert!(!first.is_null());
    assert_eq!(write_in_child(first), Some(libc::SIGSEGV), "a finalized page took a write");
    // ...while an ordinary page of ours does not (the check itself works).
    let mut scratch = vec![1u8; 16];
    assert_eq!(write_in_child(scratch.as_mut_ptr()), None);

    drop(rt);
    drop(plain);
}
