//! I/O errors at every write and sync between packed bytes and a published
//! commit (issue 12): EIO and ENOSPC injected at each step of
//! `xnncache::fault::COMMIT_STEPS`, onto an existing cache and into a new one.
//! Every time: the runtime's outputs stay exact, the failure is a status
//! (never a signal), and the next process finds the last commit intact.
//! Also a real full disk: small tmpfs mounts that fill at the first
//! reservation and in the middle of a build (where this process may mount).

use std::ffi::CString;
use std::path::Path;

use xnncache::capi::{xnncache_finalize, XNNCACHE_FLAG_SYNC_WRITEBACK};
use xnncache::fault::{armed, fail_next_with, COMMIT_STEPS};
use xnncache::store::FileState;
use xnncache::Status;
use xnncache_tests::models::*;
use xnncache_tests::{cannot_run, init, last_error, options, Cache, Model, TempDir};

/// The armed failure is process-wide: the tests here run one at a time.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn open(path: &Path) -> Cache {
    let c = CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let mut o = options(Some(&c));
    o.flags = XNNCACHE_FLAG_SYNC_WRITEBACK;
    Cache::open_with(&o)
}

/// Runs `models` through a cache on `path`, checking every output against no
/// cache before and after finalize; returns the finalize status and stats.
fn launch(path: &Path, models: &[&Model]) -> (Status, xnncache_tests::Stats) {
    init();
    let cache = open(path);
    let mut status = Status::XNNCACHE_OK;
    for m in models {
        let expected = m.run(std::ptr::null_mut());
        m.register(&cache, true);
        assert_eq!(&m.run(cache.provider()), &expected);
        let s = xnncache_finalize(cache.0);
        if s != Status::XNNCACHE_OK {
            status = s;
        }
        assert_eq!(m.run(cache.provider()), expected, "outputs after a failed write-back");
    }
    (status, cache.stats())
}

#[test]
fn every_write_and_sync_of_the_commit_path_can_fail() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = TempDir::new("ioerrors");
    let (a, b) = (fc_f32_bias(), conv2d());
    let mut figures = std::collections::BTreeMap::new();
    for &step in COMMIT_STEPS {
        for (errno, name) in [(libc::EIO, "EIO"), (libc::ENOSPC, "ENOSPC")] {
            let what = format!("{name} at '{step}'");
            // Onto an existing commit: the new model's commit fails.
            let path = dir.file(&format!("{}-{name}.bin", step.replace([' ', ':'], "_")));
            assert_eq!(launch(&path, &[&a]).0, Status::XNNCACHE_OK);
            let base = std::fs::read(&path).unwrap();
            fail_next_with(step, errno);
            let (status, s) = launch(&path, &[&b]);
            let fired = !armed();
            fail_next_with("none", 0); // disarm whatever did not fire
            let next = launch(&path, &[&a, &b]);
            assert_eq!(next.1.file_state, FileState::XNNCACHE_FILE_REUSED as u32, "{what}: the last commit was lost ({})", last_error());
            // `a`'s weights are still found (nothing repacked for them).
            assert!(next.1.hits >= 1, "{what}: {:?}", next.1);
            *figures.entry((step, "onto a commit", fired, status == Status::XNNCACHE_OK)).or_insert(0) += 1;
            // Appending to a commit renames nothing; every other step is reached.
            assert_eq!(fired, step != "commit: rename", "{what}: did the failure fire appending to a commit?");
            if fired && step != "grow: allocate" {
                assert_eq!(status, Status::XNNCACHE_IO_ERROR, "{what}: finalize must report it ({s:?})");
            } else {
                assert_eq!(status, Status::XNNCACHE_OK, "{what}: {}", last_error());
            }
            // A failed growth is retried at the exact size, else the heap takes
            // the weights: either way finalize has nothing to report. Whatever
            // failed, the committed bytes are neither cut nor rewritten (only
            // the other header slot may have been written).
            let after = std::fs::read(&path).unwrap();
            assert!(after.len() >= base.len(), "{what}: the file was cut below its commit");
            assert!(after[DATA_START..base.len()] == base[DATA_START..], "{what}: committed bytes were rewritten");

            // A new file whose first commit fails: the next open rebuilds.
            let fresh = dir.file(&format!("fresh-{}-{name}.bin", step.replace([' ', ':'], "_")));
            fail_next_with(step, errno);
            let (status, _) = launch(&fresh, &[&a]);
            let fired = !armed();
            *figures.entry((step, "new file", fired, status == Status::XNNCACHE_OK)).or_insert(0) += 1;
            fail_next_with("none", 0);
            assert!(fired, "{what}: the failure never fired building a new file");
            let next = launch(&fresh, &[&a]);
            // A failed growth is retried at the exact size: the commit is made.
            // Any other failure leaves no file (the rebuild was never renamed).
            let state = if step == "grow: allocate" { FileState::XNNCACHE_FILE_REUSED } else { FileState::XNNCACHE_FILE_NEW };
            assert_eq!(next.1.file_state, state as u32, "{what} (new file, {status:?}): {:?}", next.1);
            let temps = std::fs::read_dir(&dir.0).unwrap().filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".tmp")).count();
            assert_eq!(temps, 0, "{what}: a temporary was left behind");
        }
    }
    // (step, onto what, fired, finalize returned OK): count
    println!("I/O errors injected: {figures:?}");
}

const DATA_START: usize = 64 << 10;

fn mount_tmpfs(at: &Path, size: &str) -> bool {
    std::fs::create_dir_all(at).unwrap();
    std::process::Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"]).arg(at).status().is_ok_and(|s| s.success())
}

fn umount(at: &Path) {
    let _ = std::process::Command::new("umount").arg(at).status();
}

/// A tmpfs too small for the header, one that fills in the middle of a
/// build, and one that a first commit filled before a second model came:
/// no SIGBUS, exact outputs, and the committed file (if any) still valid.
#[test]
fn a_full_disk_at_the_first_reservation_and_in_the_middle_of_a_build() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = TempDir::new("fulldisk");
    let small = dir.file("mnt");
    if !mount_tmpfs(&small, "32k") {
        return cannot_run("the right to mount a tmpfs");
    }
    let result = std::panic::catch_unwind(|| {
        // 32 KiB: not even the header fits.
        let (_, s) = launch(&small.join("a.bin"), &[&fc_f32_bias()]);
        assert_eq!(s.backing, xnncache_tests::Backing::XNNCACHE_BACKING_HEAP as u32, "{s:?}");
        umount(&small);
        // 2 MiB: the 4 MiB model fills it in the middle of its build.
        assert!(mount_tmpfs(&small, "2m"));
        let path = small.join("b.bin");
        let (_, first) = launch(&path, &[&fc_f32_bias()]);
        assert_eq!(first.commits, 1, "{first:?}");
        let (_, s) = launch(&path, &[&fc_f32_bias(), &large_fc()]);
        assert!(s.heap_fallback_bytes > 0, "{s:?}");
        let (_, again) = launch(&path, &[&fc_f32_bias()]);
        assert_eq!((again.file_state, again.packed_bytes), (FileState::XNNCACHE_FILE_REUSED as u32, 0), "{again:?}");
    });
    umount(&small);
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}
