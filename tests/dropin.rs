//! The drop-in layer (`xnncache_create_weights_cache` & co., the file named
//! by `XNNCACHE_PATH`) under the conditions XNNPACK's own callers meet: a file
//! that cannot take a commit must not fail `xnn_finalize_weights_cache`, and a
//! host that never registers its weights must not grow the file forever.

use std::ptr::null_mut;

use xnncache::dropin::{xnncache_create_weights_cache_for_abi, xnncache_delete_weights_cache, xnncache_finalize_weights_cache};
use xnncache_tests::models::*;
use xnncache_tests::{build_id, cannot_run, options, run_child, Model, TempDir};

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
