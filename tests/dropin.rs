//! The drop-in layer (`xnncache_create_weights_cache` & co., the file named
//! by `XNNCACHE_PATH`) under the conditions XNNPACK's own callers meet: a file
//! that cannot take a commit must not fail `xnn_finalize_weights_cache`, and a
//! host that never registers its weights must not grow the file forever.

use std::ptr::null_mut;

use xnncache::dropin::{xnncache_create_weights_cache_for_abi, xnncache_delete_weights_cache, xnncache_finalize_weights_cache, xnncache_from_weights_cache};
use xnncache_tests::models::*;
use xnncache_tests::{build_id, cannot_run, options, run_child, Cache, Model, TempDir};

/// One lifetime of a drop-in cache, as XNNPACK's callers use it: create,
/// build a runtime through it, finalize (which must succeed), run again,
/// delete. Checks the outputs against no cache.
fn one_lifetime(model: &Model, expected: &xnncache_tests::Outputs) {
    let o = options(None);
    let mut provider = null_mut();
    let status = xnncache_create_weights_cache_for_abi(o.key_size, o.provider_size, build_id().as_ptr().cast(), build_id().len(), 0, &mut provider);
    assert_eq!(status, 0, "xnncache_create_weights_cache");
    assert_eq!(&model.run(provider.cast()), expected);
    // XNNPACK's callers take any failure here as fatal.
    assert_eq!(xnncache_finalize_weights_cache(provider, 0), 0, "xnncache_finalize_weights_cache: {}", xnncache_tests::last_error());
    assert_eq!(&model.run(provider.cast()), expected);
    assert_eq!(xnncache_delete_weights_cache(provider), 0);
}

fn path() -> std::path::PathBuf {
    std::env::var_os("XNNCACHE_PATH").expect("XNNCACHE_PATH").into()
}

/// Run by a_drop_in_file_stays_bounded with XNNCACHE_PATH set.
#[test]
#[ignore = "run in a child process by a_drop_in_file_stays_bounded"]
fn child_runs_many_drop_in_lifetimes() {
    let runs: usize = std::env::var("XNNCACHE_TEST_RUNS").unwrap().parse().unwrap();
    let model = large_fc(); // 4 MiB of unregistered weights per lifetime
    let expected = model.run(null_mut());
    let mut largest = 0;
    for _ in 0..runs {
        one_lifetime(&model, &expected);
        largest = largest.max(std::fs::metadata(path()).map_or(0, |m| m.len()));
    }
    println!("dropin-largest={largest}");
}

/// Without registration nothing is persistent, yet every lifetime packs into
/// the file: that space is given back, so the file stays within a few
/// lifetimes' worth however many run (it grew by 4 MiB per run before).
#[test]
fn a_drop_in_file_stays_bounded() {
    let dir = TempDir::new("dropin-bounded");
    let file = dir.file("dropin.bin");
    let runs = std::env::var("XNNCACHE_TEST_DROPIN_RUNS").unwrap_or_else(|_| "200".into());
    let out = run_child("child_runs_many_drop_in_lifetimes", &[("XNNCACHE_PATH", file.to_str().unwrap()), ("XNNCACHE_TEST_RUNS", &runs)], None);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{:?}\n{stdout}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    let largest: u64 = stdout.lines().find_map(|l| l.split("dropin-largest=").nth(1)).expect("the child's figure").parse().unwrap();
    println!("{runs} drop-in lifetimes of 4 MiB each: between lifetimes the file was at most {largest} bytes");
    // RELIABILITY.md's promise: between lifetimes, nothing but the header and
    // an empty index (the space of unregistered weights is given back).
    let empty = xnncache::format::DATA_START as usize + xnncache::format::Index::default().encoded_len();
    assert!(largest <= empty as u64, "{runs} runs: the file reached {largest} bytes between lifetimes (promised: {empty})");
}

const JUST_PAST_THE_HEADER: u64 = 68 << 10;

fn limit_past_the_header() -> std::io::Result<()> {
    xnncache_tests::limit_file_size(JUST_PAST_THE_HEADER)
}

/// Run by the_drop_in_finalizes_when_the_file_cannot_take_the_commit.
#[test]
#[ignore = "run in a child process by the_drop_in_finalizes_when_the_file_cannot_take_the_commit"]
fn child_finalizes_a_drop_in_that_cannot_commit() {
    for model in [fc_f32_bias(), conv2d(), large_fc()] {
        let expected = model.run(null_mut());
        one_lifetime(&model, &expected);
    }
    println!("dropin-full-ok");
}

/// A file-size limit just past the header (the commit's index cannot be
/// written), and, where this process may mount one, a 32 KiB tmpfs: every
/// finalize succeeds and every output is exact.
#[test]
fn the_drop_in_finalizes_when_the_file_cannot_take_the_commit() {
    let dir = TempDir::new("dropin-full");
    let file = dir.file("dropin.bin");
    let check = |out: std::process::Output, what: &str| {
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && stdout.contains("dropin-full-ok"), "{what}: {:?}\n{stdout}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    };
    check(run_child("child_finalizes_a_drop_in_that_cannot_commit", &[("XNNCACHE_PATH", file.to_str().unwrap())], Some(limit_past_the_header)), "RLIMIT_FSIZE");
    let small = dir.file("tmpfs");
    std::fs::create_dir(&small).unwrap();
    let mounted = std::process::Command::new("mount").args(["-t", "tmpfs", "-o", "size=32k", "tmpfs"]).arg(&small).status().is_ok_and(|s| s.success());
    if !mounted {
        return cannot_run("the right to mount a tmpfs (for the full-disk case)");
    }
    let on_tmpfs = small.join("dropin.bin");
    let out = run_child("child_finalizes_a_drop_in_that_cannot_commit", &[("XNNCACHE_PATH", on_tmpfs.to_str().unwrap())], None);
    let _ = std::process::Command::new("umount").arg(&small).status();
    check(out, "full tmpfs");
}

/// One drop-in lifetime that reaches its `xnncache` through
/// `xnncache_from_weights_cache`: registers the model's weights by name
/// through it, and prints what `xnncache_stats` says after the write-back.
fn lifetime_through_the_accessor(model: &Model, expected: &xnncache_tests::Outputs) -> xnncache::cache::Stats {
    let o = options(None);
    let mut provider = null_mut();
    let status = xnncache_create_weights_cache_for_abi(o.key_size, o.provider_size, build_id().as_ptr().cast(), build_id().len(), 0, &mut provider);
    assert_eq!(status, 0, "xnncache_create_weights_cache");
    let mut handle = null_mut();
    assert_eq!(xnncache_from_weights_cache(provider, &mut handle), xnncache::Status::XNNCACHE_OK, "{}", xnncache_tests::last_error());
    // Borrowed: never closed through this wrapper.
    let cache = std::mem::ManuallyDrop::new(Cache(handle));
    assert_eq!(cache.provider().cast(), provider, "the handle's provider is the weights cache");
    model.register(&cache, true);
    assert_eq!(&model.run(provider.cast()), expected);
    assert_eq!(xnncache_finalize_weights_cache(provider, 0), 0, "{}", xnncache_tests::last_error());
    cache.wait();
    assert_eq!(xnncache::capi::xnncache_verify(cache.0), xnncache::Status::XNNCACHE_OK, "{}", xnncache_tests::last_error());
    let stats = cache.stats();
    assert_eq!(xnncache_delete_weights_cache(provider), 0);
    // Deleting the weights cache ends the borrowed handle too.
    assert_eq!(xnncache::capi::xnncache_stats(cache.0, &mut Default::default()), xnncache::Status::XNNCACHE_INVALID_ARGUMENT);
    assert_eq!(xnncache_from_weights_cache(provider, &mut handle), xnncache::Status::XNNCACHE_INVALID_ARGUMENT);
    stats
}

/// Run by a_drop_in_cache_is_reachable_through_its_provider with XNNCACHE_PATH set.
#[test]
#[ignore = "run in a child process by a_drop_in_cache_is_reachable_through_its_provider"]
fn child_uses_the_accessor() {
    let model = fc_f32_bias();
    let expected = model.run(null_mut());
    let cold = lifetime_through_the_accessor(&model, &expected);
    let warm = lifetime_through_the_accessor(&model, &expected);
    println!("accessor cold_entries={} warm_loaded={} warm_packed={}", cold.entries, warm.loaded_entries, warm.packed_bytes);
}

/// A drop-in user reaches the rest of the C API through its provider: the
/// weights it registers through the handle are persisted by name, and the
/// next lifetime finds them in the file. Bad arguments are refused.
#[test]
fn a_drop_in_cache_is_reachable_through_its_provider() {
    let dir = TempDir::new("dropin-accessor");
    let file = dir.file("dropin.bin");
    let out = run_child("child_uses_the_accessor", &[("XNNCACHE_PATH", file.to_str().unwrap())], None);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{:?}\n{stdout}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    let field = |k: &str| -> u64 { stdout.split_whitespace().find_map(|w| w.strip_prefix(k)).and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{k} in {stdout}")) };
    assert!(field("cold_entries=") > 0, "{stdout}");
    assert_eq!(field("warm_loaded="), field("cold_entries="), "the second lifetime reuses what the first registered: {stdout}");
    assert_eq!(field("warm_packed="), 0, "{stdout}");

    let mut handle = null_mut();
    assert_eq!(xnncache_from_weights_cache(null_mut(), &mut handle), xnncache::Status::XNNCACHE_INVALID_ARGUMENT);
    let foreign = 0x1000 as *mut xnncache::capi::XnnWeightsCacheProvider;
    assert_eq!(xnncache_from_weights_cache(foreign, &mut handle), xnncache::Status::XNNCACHE_INVALID_ARGUMENT);
    assert!(xnncache_tests::last_error().contains("not a weights cache made by xnncache"), "{}", xnncache_tests::last_error());
    let cache = Cache::open(None);
    let provider = cache.provider().cast();
    assert_eq!(xnncache_from_weights_cache(provider, null_mut()), xnncache::Status::XNNCACHE_INVALID_ARGUMENT);
    assert_eq!(xnncache_from_weights_cache(provider, &mut handle), xnncache::Status::XNNCACHE_OK);
    assert_eq!(handle, cache.0, "any cache's provider leads back to its handle");
}
