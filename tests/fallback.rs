//! When there is no file, or the file cannot take the weights: memory mode,
//! an unusable path, and a file-size limit. Outputs stay exact; no SIGBUS.

use xnncache_tests::models::*;
use xnncache_tests::{last_error, run_child, Backing, Cache, TempDir};

#[test]
fn memory_mode_needs_no_file() {
    let model = mixed();
    let expected = model.run(std::ptr::null_mut());
    let cache = Cache::open(None);
    assert_eq!(model.run(cache.provider()), expected);
    cache.finalize();
    assert_eq!(model.run(cache.provider()), expected);
    let s = cache.stats();
    assert_eq!(s.backing, Backing::XNNCACHE_BACKING_MEMORY as u32);
    assert_eq!((s.file_size, s.heap_fallback_bytes), (0, 0));
    assert!(s.sealed_bytes >= s.stored_bytes, "{s:?}");
}

#[test]
fn an_unusable_path_falls_back_to_the_heap() {
    let dir = TempDir::new("unusable");
    let not_a_dir = dir.file("plain-file");
    std::fs::write(&not_a_dir, b"x").unwrap();
    for path in [std::path::PathBuf::from("/proc/xnncache/no/such/dir/cache.bin"), not_a_dir.join("cache.bin")] {
        let model = mixed();
        let expected = model.run(std::ptr::null_mut());
        let cache = Cache::open(Some(&path));
        assert!(last_error().contains("go to the heap"), "{}", last_error());
        assert_eq!(model.run(cache.provider()), expected);
        cache.finalize();
        assert_eq!(model.run(cache.provider()), expected);
        let s = cache.stats();
        assert_eq!(s.backing, Backing::XNNCACHE_BACKING_HEAP as u32, "{s:?}");
        assert_eq!(s.heap_fallback_bytes, s.stored_bytes, "{s:?}");
        assert!(s.stored_bytes > 0);
    }
}

const LIMIT: u64 = 2 << 20;

fn limit_file_size() -> std::io::Result<()> {
    xnncache_tests::limit_file_size(LIMIT)
}

/// Run by `a_file_size_limit_falls_back_without_sigxfsz_or_sigbus` in a
/// child process whose RLIMIT_FSIZE is 2 MiB.
#[test]
#[ignore = "run in a child process by a_file_size_limit_falls_back_without_sigxfsz_or_sigbus"]
fn child_packs_past_the_file_size_limit() {
    let dir = TempDir::new("fsize");
    let path = dir.file("cache.bin");
    let model = large_fc(); // 4 MiB packed, twice the limit
    let expected = model.run(std::ptr::null_mut());
    let cache = Cache::open(Some(&path));
    assert_eq!(model.run(cache.provider()), expected);
    cache.finalize();
    assert_eq!(model.run(cache.provider()), expected);
    let s = cache.stats();
    assert_eq!(s.heap_fallback_bytes, s.stored_bytes, "the weight did not fit the file: {s:?}");
    assert!(s.file_size <= LIMIT, "{s:?}");
    assert_eq!(s.backing, Backing::XNNCACHE_BACKING_HEAP as u32);
    println!("fsize-child-ok");
}

#[test]
fn a_file_size_limit_falls_back_without_sigxfsz_or_sigbus() {
    let out = run_child("child_packs_past_the_file_size_limit", &[], Some(limit_file_size));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("fsize-child-ok"),
        "child failed: {:?}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}
