//! Hostile paths and limits (issue 12): whatever the cache path, its lock
//! path or the process's limits are, opening gives a correct runtime and a
//! clear state, never a signal or a hang, and leaves every other file's
//! bytes and mode as they were. Each case states the behaviour
//! RELIABILITY.md's "Hostile paths" section documents.

use std::ffi::CString;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use xnncache::capi::{XNNCACHE_FLAG_ALLOW_FOREIGN_OWNER, XNNCACHE_FLAG_READ_ONLY, XNNCACHE_FLAG_SHARE_READ, XNNCACHE_FLAG_SYNC_WRITEBACK};
use xnncache::store::FileState;
use xnncache_tests::models::*;
use xnncache_tests::{cannot_run, init, last_error, options, run_child, run_child_from, Backing, Cache, Model, TempDir};

/// Opens `path` with `flags`, runs `model` through it before and after a
/// finalize, and checks both outputs against a runtime without a cache.
/// Returns the stats after the finalize. The write-back is synchronous, or
/// with `XNNCACHE_TEST_BACKGROUND=1` (see
/// [`every_hostile_case_again_with_the_background_write_back`]) the default
/// background one, waited for.
fn use_cache(path: &Path, flags: u32, model: &Model) -> xnncache_tests::Stats {
    let (s, status) = use_cache_finalizing(path, flags, model);
    assert_eq!(status, xnncache::Status::XNNCACHE_OK, "{}: xnncache_finalize: {}", path.display(), last_error());
    s
}

/// [`use_cache`] where `xnncache_finalize` may report that the file could
/// not take the commit (the runtime must be exact all the same).
fn use_cache_finalizing(path: &Path, flags: u32, model: &Model) -> (xnncache_tests::Stats, xnncache::Status) {
    init();
    let expected = model.run(std::ptr::null_mut());
    let c = CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let mut o = options(Some(&c));
    let background = std::env::var_os("XNNCACHE_TEST_BACKGROUND").is_some();
    o.flags = if background { flags } else { flags | XNNCACHE_FLAG_SYNC_WRITEBACK };
    let cache = Cache::open_with(&o);
    model.register(&cache, true);
    assert_eq!(model.run(cache.provider()), expected, "{}: outputs through the cache", path.display());
    let status = if background {
        // finalize returns at once; the write-back's outcome comes with wait.
        assert_eq!(xnncache::capi::xnncache_finalize(cache.0), xnncache::Status::XNNCACHE_OK, "{}", last_error());
        xnncache::capi::xnncache_wait(cache.0, u32::MAX)
    } else {
        xnncache::capi::xnncache_finalize(cache.0)
    };
    assert!(matches!(status, xnncache::Status::XNNCACHE_OK | xnncache::Status::XNNCACHE_IO_ERROR), "{status:?}: {}", last_error());
    assert_eq!(model.run(cache.provider()), expected, "{}: outputs after finalize", path.display());
    (cache.stats(), status)
}

/// Runs `f` on a thread and fails the test if it has not returned within a
/// minute: a blocking `open(2)` must fail the test, not hang the suite.
fn within_a_minute<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(60)).unwrap_or_else(|_| panic!("{what}: still blocked after a minute"))
}

fn mode_of(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().mode() & 0o7777
}

/// A victim file's bytes and mode, to check it was not touched.
fn snapshot(p: &Path) -> (Vec<u8>, u32) {
    (std::fs::read(p).unwrap(), mode_of(p))
}

fn mkfifo(p: &Path) {
    let c = CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0, "mkfifo {}", p.display());
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Whether this process can give a file to user 65534 (root, outside a user
/// namespace that maps no other user: as under scripts/test-arm64.sh).
fn can_act_as_another_user(dir: &Path) -> bool {
    let probe = dir.join("probe-chown");
    std::fs::write(&probe, b"").unwrap();
    let ok = is_root() && std::os::unix::fs::lchown(&probe, Some(65534), Some(65534)).is_ok();
    std::fs::remove_file(&probe).unwrap();
    ok
}

// --- Paths that are not a regular file -------------------------------------

/// A FIFO (or a symlink to one), a directory, a socket, `/dev/null`,
/// `/dev/zero`: never opened in a way that blocks, never written, never
/// replaced; the weights go to the heap with the reason in the log.
#[test]
fn paths_that_are_not_regular_files_are_refused_without_blocking() {
    let dir = TempDir::new("hostile-kinds");
    let fifo = dir.file("fifo");
    mkfifo(&fifo);
    let to_fifo = dir.file("to-fifo");
    std::os::unix::fs::symlink(&fifo, &to_fifo).unwrap();
    let folder = dir.file("folder");
    std::fs::create_dir(&folder).unwrap();
    let socket = dir.file("socket");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let to_null = dir.file("to-null");
    std::os::unix::fs::symlink("/dev/null", &to_null).unwrap();
    let to_zero = dir.file("to-zero");
    std::os::unix::fs::symlink("/dev/zero", &to_zero).unwrap();
    for path in [fifo, to_fifo, folder, socket, to_null, to_zero] {
        for flags in [0, XNNCACHE_FLAG_READ_ONLY] {
            let kind_before = std::fs::symlink_metadata(&path).unwrap().file_type();
            let p = path.clone();
            let s = within_a_minute(&format!("{} flags {flags}", path.display()), move || use_cache(&p, flags, &fc_f32_bias()));
            assert_eq!(s.file_state, FileState::XNNCACHE_FILE_UNUSABLE as u32, "{}: {s:?}", path.display());
            assert_eq!(s.backing, Backing::XNNCACHE_BACKING_HEAP as u32, "{}: {s:?}", path.display());
            assert_eq!(std::fs::symlink_metadata(&path).unwrap().file_type(), kind_before, "{} was replaced", path.display());
        }
    }
    assert!(!dir.file("folder").join("x").exists());
}

/// A symlink to a victim that is not a cache: the victim is read, refused,
/// and left alone; the rebuild replaces the symlink, not its target. A
/// dangling symlink: the rebuild replaces the link and creates nothing at
/// its target.
#[test]
fn symlinks_are_never_written_through() {
    let dir = TempDir::new("hostile-symlinks");
    let victim = dir.file("victim.txt");
    std::fs::write(&victim, b"precious bytes, not a cache").unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o640)).unwrap();
    let before = snapshot(&victim);
    let link = dir.file("cache-link");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    let s = use_cache(&link, 0, &fc_f32_bias());
    assert_eq!(s.file_state, FileState::XNNCACHE_FILE_REBUILT_CORRUPT as u32, "{s:?}");
    assert_eq!(snapshot(&victim), before, "the victim changed");
    assert!(std::fs::symlink_metadata(&link).unwrap().is_file(), "the rebuild replaced the link with the cache");

    let target = dir.file("nowhere").join("planted");
    let dangling = dir.file("dangling");
    std::os::unix::fs::symlink(&target, &dangling).unwrap();
    let s = use_cache(&dangling, 0, &fc_f32_bias());
    assert_eq!(s.file_state, FileState::XNNCACHE_FILE_NEW as u32, "{s:?}");
    assert!(!target.exists() && !dir.file("nowhere").exists(), "the link's target was created");
}

/// The lock path as a dangling symlink, a symlink to a victim, a FIFO or a
/// directory: nothing is created or written through it, no open blocks, and
/// the runtime works (the weights stay in memory: without the lock, this
/// process may not write the file).
#[test]
fn a_hostile_lock_path_is_never_followed() {
    let dir = TempDir::new("hostile-lock");
    let victim = dir.file("victim.txt");
    std::fs::write(&victim, b"victim").unwrap();
    let before = snapshot(&victim);
    let planted = dir.file("planted-by-lock");
    type Plant = fn(&Path, &Path, &Path);
    let cases: [(&str, Plant); 4] = [
        ("dangling", |lock, _, planted| std::os::unix::fs::symlink(planted, lock).unwrap()),
        ("to a victim", |lock, victim, _| std::os::unix::fs::symlink(victim, lock).unwrap()),
        ("fifo", |lock, _, _| mkfifo(lock)),
        ("directory", |lock, _, _| std::fs::create_dir(lock).unwrap()),
    ];
    for (i, (what, plant)) in cases.iter().enumerate() {
        let path = dir.file(&format!("cache-{i}"));
        let lock = dir.file(&format!("cache-{i}.lock"));
        plant(&lock, &victim, &planted);
        let p = path.clone();
        let s = within_a_minute(what, move || use_cache(&p, 0, &fc_f32_bias()));
        assert_eq!(s.commits, 0, "{what}: committed without the lock: {s:?}");
        assert!(s.heap_fallback_bytes > 0 || s.backing == Backing::XNNCACHE_BACKING_HEAP as u32, "{what}: {s:?}");
        assert!(!planted.exists(), "{what}: the lock symlink's target was created");
        assert_eq!(snapshot(&victim), before, "{what}: the victim changed");
        assert!(!path.exists(), "{what}: a cache file was published without the lock");
    }
}

// --- Permissions and owners -------------------------------------------------

/// Run in a child per umask: a new cache, its lock and a rebuild's file are
/// 0600 whatever the umask; XNNCACHE_FLAG_SHARE_READ gives 0644 (less what
/// the umask removes); a rebuild keeps an existing file's mode.
#[test]
#[ignore = "run in a child process by new_files_are_private_under_any_umask"]
fn child_creates_files_under_a_umask() {
    let umask: u32 = std::env::var("XNNCACHE_TEST_UMASK").unwrap().parse().unwrap();
    // SAFETY: umask has no preconditions.
    unsafe { libc::umask(umask as libc::mode_t) };
    let dir = TempDir::new(&format!("hostile-umask-{umask:o}"));
    let path = dir.file("cache.bin");
    use_cache(&path, 0, &fc_f32_bias());
    assert_eq!(mode_of(&path), 0o600, "umask {umask:o}: the cache file");
    assert_eq!(mode_of(&dir.file("cache.bin.lock")), 0o600, "umask {umask:o}: the lock file");

    let shared = dir.file("shared.bin");
    use_cache(&shared, XNNCACHE_FLAG_SHARE_READ, &fc_f32_bias());
    assert_eq!(mode_of(&shared), 0o644 & !umask, "umask {umask:o}: a shared cache file");

    // A rebuild (another model's file is corrupt) keeps the old bits.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[10] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    let s = use_cache(&path, 0, &fc_f32_bias());
    assert_eq!(s.file_state, FileState::XNNCACHE_FILE_REBUILT_CORRUPT as u32, "{s:?}");
    assert_eq!(mode_of(&path), 0o640, "umask {umask:o}: a rebuild changed the file's mode");
    println!("umask-child-ok");
}

#[test]
fn new_files_are_private_under_any_umask() {
    for umask in ["0", "2", "18", "63"] {
        let out = run_child("child_creates_files_under_a_umask", &[("XNNCACHE_TEST_UMASK", umask)], None);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && stdout.contains("umask-child-ok"), "umask {umask}: {:?}\n{stdout}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    }
}

/// A cache of ours that group or others may write is not trusted: it is
/// rebuilt as a private file (whose bytes are then ours alone).
#[test]
fn a_cache_others_may_write_is_rebuilt_privately() {
    let dir = TempDir::new("hostile-writable");
    let path = dir.file("cache.bin");
    let model = fc_f32_bias();
    assert_eq!(use_cache(&path, 0, &model).file_state, FileState::XNNCACHE_FILE_NEW as u32);
    for mode in [0o666, 0o620, 0o602] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        let s = use_cache(&path, 0, &model);
        assert_eq!(s.file_state, FileState::XNNCACHE_FILE_REBUILT_UNTRUSTED as u32, "mode {mode:o}: {s:?}");
        assert!(s.packed_bytes > 0 && s.loaded_entries == 0, "mode {mode:o}: the untrusted file's entries were used: {s:?}");
        assert_eq!(mode_of(&path), 0o600, "mode {mode:o}: the rebuilt file");
        let s = use_cache(&path, 0, &model);
        assert_eq!((s.file_state, s.packed_bytes), (FileState::XNNCACHE_FILE_REUSED as u32, 0), "mode {mode:o}: the private rebuild is reused: {s:?}");
    }
}

fn chown(p: &Path, uid: u32) {
    std::os::unix::fs::lchown(p, Some(uid), Some(uid)).unwrap();
}

/// Another user's cache (0644 or 0666) is neither read nor replaced: the
/// weights stay in memory and its bytes and mode stay as they were. With
/// XNNCACHE_FLAG_ALLOW_FOREIGN_OWNER a 0644 one is used read-only (a bundle
/// shared by a service); a 0666 one still is not. Needs root (to own a file
/// as someone else); as another user the test says so and checks nothing.
#[test]
fn another_users_cache_is_never_used_or_replaced() {
    let dir = TempDir::new("hostile-foreign");
    if !can_act_as_another_user(&dir.0) {
        return cannot_run("root, with other users mapped, to give a file to another user");
    }
    let path = dir.file("cache.bin");
    let model = fc_f32_bias();
    use_cache(&path, 0, &model);
    chown(&path, 65534);
    for mode in [0o644, 0o666] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        let before = snapshot(&path);
        let s = use_cache(&path, 0, &model);
        assert_eq!(s.file_state, FileState::XNNCACHE_FILE_UNUSABLE as u32, "mode {mode:o}: {s:?}");
        assert!(last_error().contains("another user") || s.heap_fallback_bytes > 0, "{}", last_error());
        assert_eq!((s.loaded_entries, s.backing), (0, Backing::XNNCACHE_BACKING_HEAP as u32), "mode {mode:o}: {s:?}");
        assert_eq!(snapshot(&path), before, "mode {mode:o}: the other user's file changed");
        assert_eq!(std::fs::metadata(&path).unwrap().uid(), 65534);

        let s = use_cache(&path, XNNCACHE_FLAG_ALLOW_FOREIGN_OWNER, &model);
        if mode == 0o644 {
            assert_eq!((s.file_state, s.packed_bytes), (FileState::XNNCACHE_FILE_REUSED as u32, 0), "allowed, mode {mode:o}: {s:?}");
        } else {
            assert_eq!(s.file_state, FileState::XNNCACHE_FILE_UNUSABLE as u32, "allowed, mode {mode:o}: {s:?}");
        }
        assert_eq!(snapshot(&path), before, "allowed, mode {mode:o}: the other user's file changed");
    }
}

/// Run as user `nobody` by a_valid_cache_in_an_unwritable_folder_is_mapped_read_only.
#[test]
#[ignore = "run in a child process by a_valid_cache_in_an_unwritable_folder_is_mapped_read_only"]
fn child_uses_a_cache_it_cannot_write() {
    let path = std::path::PathBuf::from(std::env::var("XNNCACHE_TEST_PATH").unwrap());
    assert!(std::fs::OpenOptions::new().write(true).open(&path).is_err(), "the child can write the file");
    let s = use_cache(&path, 0, &fc_f32_bias());
    assert_eq!((s.file_state, s.packed_bytes), (FileState::XNNCACHE_FILE_REUSED as u32, 0), "{s:?}");
    assert!(s.hits > 0, "{s:?}");
    // Weights the file lacks are packed into memory.
    let s = use_cache(&path, 0, &conv2d());
    assert_eq!(s.file_state, FileState::XNNCACHE_FILE_REUSED as u32, "{s:?}");
    assert!(s.packed_bytes > 0 && s.commits == 0, "{s:?}");
    println!("readonly-child-ok");
}

fn drop_to_nobody() -> std::io::Result<()> {
    // SAFETY: setgid and setuid are async-signal-safe system calls.
    if unsafe { libc::setgid(65534) } != 0 || unsafe { libc::setuid(65534) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The shipped-bundle case: a valid cache the process may read but not
/// write, in a folder it cannot write, is mapped read-only and used (root
/// bypasses permissions, so as root the child runs as `nobody`).
#[test]
fn a_valid_cache_in_an_unwritable_folder_is_mapped_read_only() {
    // The child, as `nobody`, must reach the file and the test binary: both
    // live under /tmp (the build's folders may be private: under qemu in CI
    // they are under root's home).
    let dir = TempDir::public("hostile-readonly");
    let as_nobody = can_act_as_another_user(&dir.0);
    if is_root() && !as_nobody {
        return cannot_run("another user to become (root ignores permissions)");
    }
    let bundle = dir.file("bundle");
    std::fs::create_dir(&bundle).unwrap();
    let path = bundle.join("cache.bin");
    use_cache(&path, 0, &fc_f32_bias());
    let before = snapshot(&path);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o444)).unwrap();
    std::fs::set_permissions(&bundle, std::fs::Permissions::from_mode(0o555)).unwrap();
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o755)).unwrap();
    let exe = dir.file("test-binary");
    std::fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = run_child_from(
        &exe,
        "child_uses_a_cache_it_cannot_write",
        &[("XNNCACHE_TEST_PATH", path.to_str().unwrap())],
        if as_nobody { Some(drop_to_nobody) } else { None },
    );
    std::fs::set_permissions(&bundle, std::fs::Permissions::from_mode(0o755)).unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && stdout.contains("readonly-child-ok"), "{:?}\n{stdout}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read(&path).unwrap(), before.0, "the read-only file changed");
}

// --- Limits -----------------------------------------------------------------

/// Run under a file-size limit by a_file_size_limit_is_a_status_never_a_signal.
#[test]
#[ignore = "run in a child process by a_file_size_limit_is_a_status_never_a_signal"]
fn child_opens_under_a_file_size_limit() {
    let limit: u64 = std::env::var("XNNCACHE_TEST_FSIZE").unwrap().parse().unwrap();
    xnncache_tests::limit_file_size(limit).unwrap();
    let path = std::path::PathBuf::from(std::env::var("XNNCACHE_TEST_PATH").unwrap());
    // A new file, and one more model onto the committed one.
    let fresh = path.with_extension("fresh");
    let (s, _) = use_cache_finalizing(&fresh, 0, &fc_f32_bias());
    assert!(std::fs::metadata(&fresh).map_or(0, |m| m.len()) <= limit, "{s:?}");
    let before = std::fs::metadata(&path).unwrap().len();
    let (s, _) = use_cache_finalizing(&path, 0, &conv2d());
    assert!(std::fs::metadata(&path).unwrap().len() <= limit.max(before), "{s:?}");
    println!("fsize-limit-child-ok");
}

/// Every limit from 0 to past the header: no SIGXFSZ, exact outputs, and
/// the committed file still valid for the next process.
#[test]
fn a_file_size_limit_is_a_status_never_a_signal() {
    let dir = TempDir::new("hostile-fsize");
    let model = fc_f32_bias();
    for limit in [0u64, 1, 4096, 32768, 57344, 65535, 65536, 69632, 131072, 1 << 20] {
        let path = dir.file(&format!("cache-{limit}.bin"));
        use_cache(&path, 0, &model);
        let out = run_child(
            "child_opens_under_a_file_size_limit",
            &[("XNNCACHE_TEST_FSIZE", &limit.to_string()), ("XNNCACHE_TEST_PATH", path.to_str().unwrap())],
            None,
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && stdout.contains("fsize-limit-child-ok"), "limit {limit}: {:?}\n{stdout}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
        // The first model is still found by the next process.
        let s = use_cache(&path, 0, &model);
        assert_eq!((s.file_state, s.packed_bytes), (FileState::XNNCACHE_FILE_REUSED as u32, 0), "limit {limit}: {s:?}");
    }
}

// --- Leftovers --------------------------------------------------------------

/// Temporaries of rebuilds whose process is gone are removed by the next
/// writer (when it takes the writer lock: to build, to add weights, or at
/// close to trim, never while a launch only reads); a live process's are kept.
#[test]
fn temporaries_of_dead_writers_are_removed() {
    let dir = TempDir::new("hostile-temps");
    let path = dir.file("cache.bin");
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let parent = std::os::unix::process::parent_id();
    let dead_temp = dir.file(&format!(".cache.bin.{dead}.0.tmp"));
    let live_temp = dir.file(&format!(".cache.bin.{parent}.3.tmp"));
    let unrelated = dir.file(&format!(".other.bin.{dead}.0.tmp"));
    for t in [&dead_temp, &live_temp, &unrelated] {
        std::fs::write(t, vec![0u8; 70_000]).unwrap();
    }
    use_cache(&path, 0, &fc_f32_bias());
    assert!(!dead_temp.exists(), "a dead writer's temporary was kept");
    // A launch onto the existing file clears it too.
    std::fs::write(&dead_temp, b"x").unwrap();
    use_cache(&path, 0, &conv2d());
    assert!(!dead_temp.exists(), "a writer to an existing file kept a dead writer's temporary");
    assert!(live_temp.exists(), "a live process's temporary was removed");
    assert!(unrelated.exists(), "another cache's temporary was removed");
    // Read-only opens never delete anything.
    std::fs::write(&dead_temp, b"x").unwrap();
    use_cache(&path, XNNCACHE_FLAG_READ_ONLY, &fc_f32_bias());
    assert!(dead_temp.exists());
}

/// A valid cache on a read-only mount (an app bundle, a system image) is
/// mapped read-only and used; weights it lacks go to memory; the mount's
/// bytes are untouched. Needs permission to mount a tmpfs (else it says so).
#[test]
fn a_valid_cache_on_a_read_only_mount_is_used() {
    let dir = TempDir::new("hostile-romount");
    let mnt = dir.file("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let mount = |opts: &str| std::process::Command::new("mount").args(["-t", "tmpfs", "-o", opts, "tmpfs"]).arg(&mnt).status().is_ok_and(|s| s.success());
    if !mount("size=8m") {
        return cannot_run("the right to mount a tmpfs");
    }
    let result = std::panic::catch_unwind(|| {
        let path = mnt.join("cache.bin");
        use_cache(&path, 0, &fc_f32_bias());
        let before = snapshot(&path);
        let remounted = std::process::Command::new("mount").args(["-o", "remount,ro"]).arg(&mnt).status().is_ok_and(|s| s.success());
        assert!(remounted, "remount read-only");
        let s = use_cache(&path, 0, &fc_f32_bias());
        assert_eq!((s.file_state, s.packed_bytes), (FileState::XNNCACHE_FILE_REUSED as u32, 0), "{s:?}");
        let s = use_cache(&path, 0, &conv2d());
        assert!(s.packed_bytes > 0 && s.commits == 0 && s.heap_fallback_bytes > 0, "{s:?}");
        assert_eq!(snapshot(&path), before);
    });
    let _ = std::process::Command::new("umount").arg(&mnt).status();
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

/// Every test of this file again, in a child, with the default background
/// write-back instead of the synchronous one (the hostile paths and the
/// file-size limits must hold for the mode hosts use).
#[test]
fn every_hostile_case_again_with_the_background_write_back() {
    if std::env::var_os("XNNCACHE_TEST_BACKGROUND").is_some() {
        return; // this is the child run
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--skip", "every_hostile_case_again_with_the_background_write_back"])
        .env("XNNCACHE_TEST_BACKGROUND", "1")
        .output()
        .expect("run this test binary again");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "with the background write-back:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let passed: u32 = stdout.lines().find_map(|l| l.strip_prefix("test result: ok. ")?.split(' ').next()?.parse().ok()).unwrap_or(0);
    assert!(passed >= 10, "the child ran {passed} tests:\n{stdout}");
}
