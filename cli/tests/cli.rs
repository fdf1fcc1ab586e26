//! Runs the `xnncache` binary on cache files built here with xnncache's Rust
//! API, driving the provider's steps by hand with made-up keys (no XNNPACK):
//! inspect, verify and compact in text and JSON, a corrupted payload (exit 1),
//! a missing file (exit 2, the path in the message), and compact while
//! another writer holds the lock (exit 2, the file left alone).

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use std::ffi::CString;

use xnncache::abi::{Key, KeyV1, ProviderV1};
use xnncache::capi::{xnncache_close, xnncache_open, xnncache_options, xnncache_register_weights};
use xnncache::Status;

/// What look_up answers for a miss (XNNPACK's SIZE_MAX).
const NOT_FOUND: usize = usize::MAX;

const BUILD_ID: [u8; 32] = [0xab; 32];

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let d = std::env::temp_dir().join(format!("xnncache-cli-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A cache opened and fed through the C API (as an app would, for a v1
/// XNNPACK), whose provider steps the tests drive through its Rust `Cache`.
struct Handle(*mut xnncache::capi::xnncache);

impl Handle {
    fn open(path: &Path) -> Handle {
        let c_path = CString::new(path.to_str().unwrap()).unwrap();
        let options = xnncache_options {
            options_size: std::mem::size_of::<xnncache_options>() as u32,
            key_size: std::mem::size_of::<KeyV1>() as u32,
            provider_size: std::mem::size_of::<ProviderV1>() as u32,
            flags: 0,
            path: c_path.as_ptr(),
            fd: -1,
            compact_percent: 0,
            build_id: BUILD_ID.as_ptr().cast(),
            build_id_size: BUILD_ID.len(),
            address_space: 0,
            size_cap: 0,
            program: std::ptr::null(),
        };
        let mut raw = std::ptr::null_mut();
        assert_eq!(xnncache_open(&options, &mut raw), Status::XNNCACHE_OK);
        Handle(raw)
    }

    fn register(&self, w: &[u8], name: &str) {
        let name = CString::new(name).unwrap();
        assert_eq!(
            xnncache_register_weights(self.0, w.as_ptr().cast(), w.len(), name.as_ptr()),
            Status::XNNCACHE_OK
        );
    }

    fn cache(&self) -> std::sync::Arc<xnncache::handles::Open> {
        xnncache::handles::get(self.0).expect("an open handle, closed only by drop")
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        xnncache_close(self.0);
    }
}

/// One session: registers each weight by name, then packs it the way
/// XNNPACK does (look up; on a miss reserve, fill, insert), and commits.
fn session(path: &Path, weights: &[(&str, &[u8], usize)]) {
    let handle = Handle::open(path);
    let cache = handle.cache();
    for (i, (name, w, packed)) in weights.iter().enumerate() {
        handle.register(w, name);
        let key = Key {
            seed: 7 + i as u32,
            kernel: w.as_ptr() as usize,
            bias: 0,
            fingerprint: None,
        };
        if cache.look_up(key) != NOT_FOUND {
            continue; // committed by an earlier session
        }
        let p = cache.reserve(*packed);
        assert!(!p.is_null());
        // SAFETY: reserve gave `packed` writable bytes.
        unsafe { p.write_bytes(i as u8 + 1, *packed) };
        assert_ne!(cache.look_up_or_insert(key, p, *packed), NOT_FOUND);
    }
    cache.finalize().expect("the commit succeeds");
}

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xnncache"))
        .args(args)
        .output()
        .expect("the binary runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(&o.stdout)))
}

#[test]
fn inspect_verify_and_compact_a_file_with_two_commits() {
    let dir = TempDir::new("ok");
    let path = dir.0.join("model.xnncache");
    let p = path.to_str().unwrap();
    let (a, b) = (vec![1u8; 4096], vec![2u8; 1000]);
    session(
        &path,
        &[("layer0.weight", &a, 10_000), ("layer1.weight", &b, 3_000)],
    );
    // A second launch adds a weight: the first commit's index becomes unreachable.
    let c = vec![3u8; 512];
    session(
        &path,
        &[("layer0.weight", &a, 10_000), ("layer2.weight", &c, 700)],
    );

    let out = run(&["inspect", p]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    assert!(
        s.contains("generation 2")
            && s.contains("3 payloads")
            && s.contains("CPU identity matches"),
        "{s}"
    );
    assert!(s.contains("not checked (pass --build-id HEX)"), "{s}");

    let out = run(&["inspect", p, "--json", "--build-id", &"ab".repeat(32)]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let r = json(&out);
    assert_eq!(r["header"]["generation"], 2);
    assert_eq!(r["header"]["abi_generation"], 1);
    assert_eq!(r["header"]["build_id"], "ab".repeat(32));
    assert_eq!(r["compatibility"]["cpu_identity_matches"], true);
    assert_eq!(r["compatibility"]["build_id_matches"], true);
    let sizes: Vec<u64> = r["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["size"].as_u64().unwrap())
        .collect();
    assert_eq!(sizes, [10_000, 3_000, 700]);
    assert_eq!(r["keys"], 3);
    let unreachable = r["unreachable_bytes"].as_u64().unwrap();
    assert!(
        unreachable > 0,
        "the first commit's index is unreachable: {r}"
    );
    let size_before = r["file_size"].as_u64().unwrap();

    // A reader that stops early (`| head`, `| grep -q`) does not change the exit code.
    let mut child = Command::new(env!("CARGO_BIN_EXE_xnncache"))
        .args(["inspect", p])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    assert_eq!(child.wait().unwrap().code(), Some(0));

    let out = run(&["inspect", p, "--json", "--build-id", "cd"]);
    assert_eq!(json(&out)["compatibility"]["build_id_matches"], false);

    let out = run(&["verify", p]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("3 payloads, every checksum matches"));
    let out = run(&["verify", p, "--json"]);
    assert_eq!(json(&out)["ok"], true);
    // Verifying for another XNNPACK build: a mismatch, exit 1.
    let out = run(&["verify", p, "--build-id", "cd"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("another XNNPACK build"));

    let out = run(&["compact", p, "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let r = json(&out);
    assert_eq!(r["size_before"].as_u64(), Some(size_before));
    assert_eq!(r["size_after"].as_u64(), Some(size_before - unreachable));
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        size_before - unreachable
    );

    // The compacted file is whole, and the library reuses it.
    let out = run(&["verify", p]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let r = json(&run(&["inspect", p, "--json"]));
    assert_eq!(r["unreachable_bytes"], 0);
    assert_eq!(r["entries"].as_array().unwrap().len(), 3);
    let handle = Handle::open(&path);
    let cache = handle.cache();
    assert_eq!(cache.stats().loaded_entries, 3);
    handle.register(&a, "layer0.weight");
    assert_ne!(
        cache.look_up(Key {
            seed: 7,
            kernel: a.as_ptr() as usize,
            bias: 0,
            fingerprint: None
        }),
        NOT_FOUND
    );
    drop(handle);

    let out = run(&["compact", p]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("3 of 3 payloads kept"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn a_corrupted_payload_is_exit_1_and_a_missing_file_is_exit_2() {
    let dir = TempDir::new("bad");
    let path = dir.0.join("model.xnncache");
    let p = path.to_str().unwrap();
    let w = vec![5u8; 2048];
    session(&path, &[("w", &w, 5_000)]);
    let offset = json(&run(&["inspect", p, "--json"]))["entries"][0]["offset"]
        .as_u64()
        .unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.write_all_at(&[0xee], offset + 100).unwrap();
    drop(f);

    let out = run(&["verify", p]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(p) && err.contains("1 of 1 payloads fail their checksum"),
        "{err}"
    );
    let out = run(&["verify", p, "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let r = json(&out);
    assert_eq!(r["ok"], false);
    assert_eq!(r["bad_payloads"][0]["offset"].as_u64(), Some(offset));
    let out = run(&["compact", p]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains(p), "{}", text(&out.stderr));
    assert_eq!(
        run(&["verify", p]).status.code(),
        Some(1),
        "compact left a corrupt file alone"
    );

    // A broken header: inspect says why, exit 1.
    std::fs::write(&path, b"not a cache file").unwrap();
    let out = run(&["inspect", p]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains(p), "{}", text(&out.stderr));

    let missing = dir.0.join("missing.xnncache");
    let m = missing.to_str().unwrap();
    for cmd in ["inspect", "verify", "compact"] {
        let out = run(&[cmd, m]);
        assert_eq!(out.status.code(), Some(2), "{cmd}");
        let err = text(&out.stderr);
        assert!(
            err.contains(m) && err.contains("No such file"),
            "{cmd}: {err}"
        );
    }
    let out = run(&["verify", m, "--json"]);
    assert_eq!(json(&out)["error"], "io");
    // Usage errors are exit 2 too.
    assert_eq!(run(&["verify"]).status.code(), Some(2));
    assert_eq!(
        run(&["inspect", p, "--build-id", "xyz"]).status.code(),
        Some(2)
    );
}

#[test]
fn compact_refuses_while_another_process_holds_the_writer_lock() {
    let dir = TempDir::new("busy");
    let path = dir.0.join("model.xnncache");
    let p = path.to_str().unwrap();
    let w = vec![9u8; 1024];
    session(&path, &[("w", &w, 2_000)]);
    // Another process packing a new weight holds the writer lock from its
    // reservation until its commit.
    let handle = Handle::open(&path);
    let writer = handle.cache();
    let v = vec![8u8; 256];
    handle.register(&v, "v");
    let key = Key {
        seed: 99,
        kernel: v.as_ptr() as usize,
        bias: 0,
        fingerprint: None,
    };
    assert_eq!(writer.look_up(key), NOT_FOUND);
    let space = writer.reserve(300);
    assert!(!space.is_null());
    let out = run(&["compact", p]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stdout));
    let err = text(&out.stderr);
    assert!(err.contains(p) && err.contains("writer lock busy"), "{err}");
    // SAFETY: reserve gave 300 writable bytes.
    unsafe { space.write_bytes(1, 300) };
    assert_ne!(writer.look_up_or_insert(key, space, 300), NOT_FOUND);
    writer.finalize().unwrap();
    drop(writer); // the handle's cache is closed once nothing uses it
    drop(handle);
    let out = run(&["compact", p, "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(json(&out)["payloads_after"], 2);
}

/// The programs a file records and what a launch would drop (issue 25):
/// each session below is one program (one finalize); `--size-cap` says which
/// a writing launch drops, least recently written first.
#[test]
fn inspect_shows_programs_and_what_a_launch_would_drop() {
    let dir = TempDir::new("programs");
    let path = dir.0.join("model.xnncache");
    let p = path.to_str().unwrap();
    let (a, b, c) = (vec![1u8; 4096], vec![2u8; 1000], vec![3u8; 2048]);
    session(&path, &[("a.weight", &a, 10_000), ("b.weight", &b, 3_000)]);
    // Another shape: another program, nothing dropped.
    session(&path, &[("c.weight", &c, 20_000)]);
    let out = run(&["inspect", p, "--json", "--size-cap", "20000"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let r = json(&out);
    let programs = r["retention"]["programs"].as_array().unwrap().clone();
    let bytes: Vec<u64> = programs.iter().map(|p| p["bytes"].as_u64().unwrap()).collect();
    assert_eq!(bytes, [13_000, 20_000], "{r}");
    assert_eq!(programs[0]["update_drops_bytes"], 13_000);
    assert!(programs[0]["sequence"].as_u64() < programs[1]["sequence"].as_u64());
    let capped = &r["retention"]["under_size_cap"];
    assert_eq!((capped["dropped_programs"].as_u64(), capped["dropped_bytes"].as_u64()), (Some(1), Some(13_000)), "{r}");
    // At the cap, nothing.
    let r = json(&run(&["inspect", p, "--json", "--size-cap", "33000"]));
    assert_eq!(r["retention"]["under_size_cap"]["dropped_bytes"], 0);
    let s = text(&run(&["inspect", p, "--size-cap", "20000"]).stdout);
    assert!(s.contains("programs:      2") && s.contains("drops 1 program(s)"), "{s}");
    // Compaction keeps the records.
    assert!(run(&["compact", p]).status.success());
    let r = json(&run(&["inspect", p, "--json"]));
    assert_eq!(r["retention"]["programs"].as_array().unwrap().len(), 2, "{r}");
}
