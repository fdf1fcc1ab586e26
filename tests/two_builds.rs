//! Two xnncache builds on one cache file: this one, and an older one built
//! from the repository's history (39d62c0, the last build of format version
//! 1), in processes of their own. A file never holds commits of two formats:
//! this build rebuilds a format-1 file into a new one renamed over it, so the
//! older build finds nothing it can append to and bytes a runtime of ours
//! maps never change (they did: the older build took the format-1 slot left
//! beside ours and appended over our payloads).

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::process::Command;

use xnncache::format::{slot_stamp, HEADER_SIZE, SLOT_OFFSETS};
use xnncache::store::FileState;
use xnncache_tests::{build_id, cannot_run, last_error, options, slots, Cache, TempDir};

/// The older build: the last commit that wrote format version 1.
const OLD: &str = "39d62c0";
const NOT_FOUND: usize = usize::MAX;

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ is in the repository").to_path_buf()
}

/// Builds the older library (once per target folder) and a writer program
/// linked with it; `None` when the git history is not here.
fn old_writer() -> Option<PathBuf> {
    let repo = repository();
    let has_commit = Command::new("git").arg("-C").arg(&repo).args(["cat-file", "-e", &format!("{OLD}^{{commit}}")]).status();
    if !has_commit.is_ok_and(|s| s.success()) {
        cannot_run(&format!("git and the repository's history (commit {OLD}), to build an older xnncache"));
        return None;
    }
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("xnncache-{OLD}"));
    let lib_dir = base.join("target/debug");
    let program = base.join("old_build_writer");
    if !program.exists() {
        let source = base.join("src");
        let _ = std::fs::remove_dir_all(&source);
        std::fs::create_dir_all(&source).unwrap();
        let archive = Command::new("sh")
            .arg("-c")
            .arg(format!("git -C '{}' archive {OLD} | tar -x -C '{}'", repo.display(), source.display()))
            .status()
            .unwrap();
        assert!(archive.success(), "cannot unpack {OLD}");
        // Only the core library (no XNNPACK), with this toolchain; none of
        // this test run's own flags (a sanitizer's, say) apply to it.
        let built = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .current_dir(&source)
            .args(["build", "--lib", "-p", "xnncache", "--target-dir"])
            .arg(base.join("target"))
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("CARGO_BUILD_TARGET")
            .output()
            .unwrap();
        assert!(built.status.success(), "building xnncache {OLD} failed:\n{}", String::from_utf8_lossy(&built.stderr));
        let compiler = std::env::var("CC").unwrap_or_else(|_| "cc".into());
        let linked = Command::new(compiler)
            .arg(repository().join("tests/c/old_build_writer.c"))
            .arg("-o")
            .arg(base.join("old_build_writer.tmp"))
            // The static library: the shared one carries a soname the build sets up elsewhere.
            .arg(lib_dir.join("libxnncache.a"))
            .args(["-lpthread", "-ldl", "-lm", "-lgcc_s"])
            .output()
            .unwrap();
        assert!(linked.status.success(), "{}", String::from_utf8_lossy(&linked.stderr));
        std::fs::rename(base.join("old_build_writer.tmp"), &program).unwrap();
    }
    Some(program)
}

/// Runs the older build's writer: one weight named `name`, `size` bytes of `byte`.
fn run_old(program: &Path, path: &Path, name: &str, byte: u8, size: usize) -> String {
    let id: String = build_id().iter().map(|b| format!("{b:02x}")).collect();
    let out = Command::new(program).arg(path).arg(id).args([name, "11", &byte.to_string(), &size.to_string()]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "the older build failed: {stdout}{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

fn versions(path: &Path) -> Vec<u32> {
    let bytes = std::fs::read(path).unwrap();
    SLOT_OFFSETS.iter().filter_map(|&o| slot_stamp(&bytes[o as usize..][..HEADER_SIZE])).map(|s| s.version).collect()
}

#[test]
fn an_older_build_never_writes_over_a_newer_build_s_payloads() {
    let Some(old) = old_writer() else { return };
    let dir = TempDir::new("two-builds");
    let path = dir.file("cache.bin");
    // 1. The older build makes a format-1 file.
    let first = run_old(&old, &path, "a", 0x11, 1 << 20);
    assert!(first.contains("commits=1"), "{first}");
    assert_eq!(versions(&path), vec![1]);

    // 2. This build packs 4 MiB and commits them; its runtime keeps them mapped.
    let c = CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let mut o = options(Some(&c));
    o.flags |= xnncache::capi::XNNCACHE_FLAG_SYNC_WRITEBACK;
    let cache = Cache::open_with(&o);
    let state = cache.stats().file_state;
    let weights = vec![0x33u8; 256];
    let name = CString::new("b").unwrap();
    assert_eq!(xnncache::capi::xnncache_register_weights(cache.0, weights.as_ptr().cast(), weights.len(), name.as_ptr()), xnncache::Status::XNNCACHE_OK);
    let p = slots(&cache);
    let key = xnncache_tests::xnnpack::key(12, weights.as_ptr(), std::ptr::null());
    let size = 4 << 20;
    // SAFETY: our provider's slots, a key of the linked XNNPACK's layout, `size` reserved bytes.
    let packed = unsafe {
        assert_eq!((p.look_up.unwrap())(p.context, &key as *const _ as *const _), NOT_FOUND);
        let space = (p.reserve_space.unwrap())(p.context, size) as *mut u8;
        assert!(!space.is_null());
        space.write_bytes(0x5A, size);
        let at = (p.look_up_or_insert.unwrap())(p.context, &key as *const _ as *const _, space.cast(), size);
        (p.offset_to_addr.unwrap())(p.context, at) as *const u8
    };
    cache.finalize();
    assert_eq!(cache.stats().commits, 1, "{}", last_error());
    let versions_after_ours = versions(&path);

    // 3. The older build writes to the path again, while our runtime computes.
    let second = run_old(&old, &path, "c", 0x77, 4 << 20);
    assert!(second.contains("commits=1"), "{second}");
    // SAFETY: the entry's bytes stay mapped while the cache is open.
    let ours = unsafe { std::slice::from_raw_parts(packed, size) };
    let changed = ours.iter().filter(|&&b| b != 0x5A).count();
    assert_eq!(changed, 0, "{changed} of our {size} packed bytes changed under our runtime (older build: {second})");
    // How: the older file was readable, but a commit of ours may not sit beside its format-1 slot.
    assert_eq!(state, FileState::XNNCACHE_FILE_REBUILT_INCOMPATIBLE as u32, "{}", last_error());
    assert_eq!(versions_after_ours, vec![xnncache::format::FORMAT_VERSION], "a file holds one format");
}
