//! The persistent cache across processes: each "launch" is a child process
//! (this test binary run again on `child_launch`) that opens the cache file,
//! registers a model's weights, creates its runtimes through a counting
//! provider, checks the outputs against a runtime without a cache, finalizes,
//! and reports what it saw on one line.

use std::collections::HashMap;
use std::path::Path;

use xnncache::format::{Index, SLOT_OFFSETS};
use std::sync::atomic::Ordering;

use xnncache_tests::models::by_name;
use xnncache_tests::{cannot_run, last_error, options, run_child, Cache, Counting, TempDir};

/// Run in a child process by the tests below; configured by environment.
#[test]
#[ignore = "a launch, run in a child process by the tests of this file"]
fn child_launch() {
    let env = |k: &str| std::env::var(k).unwrap_or_default();
    let path = env("T_PATH");
    let flags: Vec<String> = env("T_FLAGS").split(',').filter(|s| !s.is_empty()).map(String::from).collect();
    let has = |f: &str| flags.iter().any(|x| x == f);
    let models: Vec<_> = env("T_MODELS").split(',').map(|m| (m.to_string(), by_name(m))).collect();
    // Baselines first, before any cache exists in this process.
    let expected: Vec<_> = models.iter().map(|(_, m)| m.run(std::ptr::null_mut())).collect();

    let c_path = std::ffi::CString::new(path.clone()).unwrap();
    let mut o = options(Some(&c_path));
    if has("readonly") {
        o.flags |= xnncache::capi::XNNCACHE_FLAG_READ_ONLY;
    }
    if has("verify") {
        o.flags |= xnncache::capi::XNNCACHE_FLAG_VERIFY;
    }
    let label = std::ffi::CString::new(env("T_LABEL")).unwrap();
    if !label.as_bytes().is_empty() {
        o.program = label.as_ptr();
    }
    if let Ok(id) = std::env::var("T_BUILD_ID") {
        o.build_id = Box::leak(id.into_bytes().into_boxed_slice()).as_ptr().cast();
        o.build_id_size = std::env::var("T_BUILD_ID").unwrap().len();
    }
    let cache = Cache::open_with(&o);
    let warning = last_error();
    for (_, m) in &models {
        m.register(&cache, !has("bycontent"));
    }
    let mut counting = Counting::wrap(cache.provider());
    let mut digest = 0u64;
    for ((name, m), want) in models.iter().zip(&expected) {
        let got = m.run(counting.provider());
        assert_eq!(&got, want, "{name}: outputs through the cache differ");
        digest ^= got.digest();
    }
    cache.finalize();
    let s = cache.stats();
    drop(cache);
    println!(
        "RESULT reserves={} aliases={} entries={} loaded={} hits={} folded={} packed={} not_persisted={} commits={} file_state={} digest={digest} points={} warning={}",
        counting.reserves.load(Ordering::Relaxed),
        counting.aliases.load(Ordering::Relaxed),
        s.entries,
        s.loaded_entries,
        s.hits,
        s.duplicates_folded,
        s.packed_bytes,
        s.not_persisted,
        s.commits,
        s.file_state,
        xnncache::fault::passed(),
        warning.replace(' ', "_"),
    );
}

/// What a launch reported.
#[derive(Debug)]
struct Launch {
    fields: HashMap<String, String>,
}

impl Launch {
    fn get(&self, k: &str) -> u64 {
        self.fields.get(k).unwrap_or_else(|| panic!("no {k} in {:?}", self.fields)).parse().unwrap()
    }
    fn warning(&self) -> &str {
        self.fields.get("warning").map_or("", String::as_str)
    }
}

fn launch_with(path: &Path, models: &str, flags: &str, extra: &[(&str, &str)]) -> Result<Launch, std::process::Output> {
    let p = path.to_str().unwrap();
    let mut env = vec![("T_PATH", p), ("T_MODELS", models), ("T_FLAGS", flags)];
    env.extend_from_slice(extra);
    let out = run_child("child_launch", &env, None);
    let stdout = String::from_utf8_lossy(&out.stdout);
    // libtest prints "test child_launch ... " on the same line first.
    match stdout.lines().find_map(|l| l.split_once("RESULT ").map(|(_, r)| r)) {
        Some(line) if out.status.success() => Ok(Launch {
            fields: line.split(' ').filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        }),
        _ => Err(out),
    }
}

fn launch(path: &Path, models: &str, flags: &str) -> Launch {
    launch_with(path, models, flags, &[]).unwrap_or_else(|out| {
        panic!("launch failed: {:?}\n{}\n{}", out.status, String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    })
}

fn file_digest(path: &Path) -> (u64, u64, std::time::SystemTime) {
    let bytes = std::fs::read(path).unwrap();
    let h = bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3));
    (bytes.len() as u64, h, std::fs::metadata(path).unwrap().modified().unwrap())
}

const NEW: u64 = xnncache::store::FileState::XNNCACHE_FILE_NEW as u64;
const REUSED: u64 = xnncache::store::FileState::XNNCACHE_FILE_REUSED as u64;
const CORRUPT: u64 = xnncache::store::FileState::XNNCACHE_FILE_REBUILT_CORRUPT as u64;
const INCOMPATIBLE: u64 = xnncache::store::FileState::XNNCACHE_FILE_REBUILT_INCOMPATIBLE as u64;
const UNUSABLE: u64 = xnncache::store::FileState::XNNCACHE_FILE_UNUSABLE as u64;

/// How many of `mixed`'s weights XNNPACK packs without a look-up first (its
/// depthwise convolution and deconvolution, on paths that may not look up):
/// a warm launch packs those into scratch memory and folds them.
fn mixed_without_look_up() -> u64 {
    use xnncache_tests::xnnpack::{looks_up, Path};
    let gen3 = xnncache_tests::xnnpack::generation() >= 3;
    [Path::Depthwise, Path::Deconvolution].into_iter().filter(|&p| !looks_up(p).unwrap_or(gen3 && p != Path::Deconvolution)).count() as u64
}

#[test]
fn a_second_process_packs_nothing_and_leaves_the_file_alone() {
    let dir = TempDir::new("warm");
    let path = dir.file("model.xnncache");
    // fp32, qd8-qc8w, qd8-qc4w and qs8 GEMMs, a convolution, a depthwise
    // convolution and a deconvolution.
    let models = "mixed,fc_f32,qs8";
    let first = launch(&path, models, "");
    assert_eq!(first.get("file_state"), NEW);
    assert_eq!((first.get("reserves"), first.get("entries"), first.get("commits")), (8, 8, 1), "{first:?}");
    assert_eq!(first.get("not_persisted"), 0, "every weight was registered: {first:?}");
    let before = file_digest(&path);

    let second = launch(&path, models, "");
    assert_eq!(second.get("file_state"), REUSED, "{}", second.warning());
    assert_eq!(second.get("loaded"), first.get("entries"));
    assert_eq!(second.get("digest"), first.get("digest"), "outputs differ between launches");
    // Every weight XNNPACK looks up is found: nothing packed. Paths that
    // never look up (deconvolution; depthwise too on 4ea82e5) pack into
    // scratch memory, and fold into the stored copy.
    let blind = mixed_without_look_up();
    assert_eq!(second.get("hits"), 8 - blind, "{second:?}");
    assert_eq!(second.get("reserves"), blind, "{second:?}");
    assert_eq!(second.get("folded"), blind, "{second:?}");
    assert_eq!((second.get("entries"), second.get("commits")), (8, 0));
    assert_eq!(file_digest(&path), before, "an open that adds nothing changed the file");
}

#[test]
fn paths_without_look_up_fold_into_the_file_and_do_not_grow_it() {
    let dir = TempDir::new("warm-nolookup");
    let path = dir.file("model.xnncache");
    let first = launch(&path, "mixed", "");
    let size = std::fs::metadata(&path).unwrap().len();
    for _ in 0..4 {
        let next = launch(&path, "mixed", "");
        assert_eq!(next.get("file_state"), REUSED);
        assert_eq!(next.get("digest"), first.get("digest"));
        assert_eq!(next.get("entries"), first.get("entries"), "a later launch added entries: {next:?}");
        // Paths XNNPACK never asks about pack and fold.
        assert_eq!(next.get("folded"), mixed_without_look_up(), "{next:?}");
        assert_eq!(std::fs::metadata(&path).unwrap().len(), size, "the file grew");
    }
}

#[test]
fn models_sharing_constants_store_them_once() {
    // shared_a and shared_b have one architecture: unlabelled, the second
    // would be taken for an update of the first (docs/FORMAT.md,
    // "Retention"). Labelled, they are two programs.
    let labelled = |path: &Path, models: &str, flags: &str| launch_with(path, models, flags, &[("T_LABEL", models)]).expect("launch");
    for flags in ["", "bycontent"] {
        let dir = TempDir::new(&format!("share{flags}"));
        let path = dir.file("models.xnncache");
        let a = labelled(&path, "shared_a", flags);
        assert_eq!(a.get("entries"), 2);
        let b = labelled(&path, "shared_b", flags);
        // The shared weight is found (1 look-up hit), only b's own is packed.
        assert_eq!(b.get("reserves"), 1, "{flags}: {b:?}");
        assert_eq!(b.get("entries"), 3, "{flags}: {b:?}");
        let both = labelled(&path, "shared_a,shared_b", flags);
        assert_eq!(both.get("reserves"), 0, "{flags}: {both:?}");
        assert_eq!(both.get("entries"), 3);
    }
}

#[test]
fn a_file_from_another_build_or_cpu_is_rebuilt() {
    let dir = TempDir::new("incompatible");
    let path = dir.file("model.xnncache");
    launch(&path, "fc_f32", "");
    // Another XNNPACK build identifier.
    let other = launch_with(&path, "fc_f32", "", &[("T_BUILD_ID", "a-different-xnnpack-build-000000")]).unwrap();
    assert_eq!(other.get("file_state"), INCOMPATIBLE);
    assert!(other.warning().contains("another_XNNPACK_build"), "{}", other.warning());
    assert!(other.get("reserves") > 0);
    // That launch rebuilt the file for its build; ours now rebuilds it back.
    let back = launch(&path, "fc_f32", "");
    assert_eq!(back.get("file_state"), INCOMPATIBLE);

    // Forge another CPU identity into the newest header slot.
    let bytes = std::fs::read(&path).unwrap();
    let (slot, mut header) = xnncache::format::pick_header([&bytes[0..256], &bytes[2048..2304]], bytes.len() as u64).unwrap();
    header.compat.cpu_id ^= 1;
    let mut forged = bytes.clone();
    let at = xnncache::format::SLOT_OFFSETS[slot] as usize;
    forged[at..at + 256].copy_from_slice(&header.encode());
    std::fs::write(&path, &forged).unwrap();
    let cpu = launch(&path, "fc_f32", "");
    assert_eq!(cpu.get("file_state"), INCOMPATIBLE);
    assert!(cpu.warning().contains("another_kind_of_CPU"), "{}", cpu.warning());
    assert_eq!(launch(&path, "fc_f32", "").get("file_state"), REUSED);
}

#[test]
fn read_only_mode_never_writes() {
    let dir = TempDir::new("readonly");
    let path = dir.file("bundle.xnncache");
    // No file yet: read-only works from memory and creates nothing.
    let none = launch(&path, "fc_f32", "readonly");
    assert_eq!(none.get("file_state"), UNUSABLE);
    assert!(!path.exists());
    launch(&path, "fc_f32", "");
    let before = file_digest(&path);
    let ro = launch(&path, "fc_f32,conv", "readonly");
    assert_eq!(ro.get("file_state"), REUSED);
    // fc_f32 found in the file; conv packed into memory.
    assert_eq!(ro.get("reserves"), 1, "{ro:?}");
    assert_eq!(file_digest(&path), before);
    assert!(!dir.file("bundle.xnncache.lock").exists() || std::fs::metadata(dir.file("bundle.xnncache.lock")).is_ok());
}

#[test]
fn a_descriptor_the_caller_owns_works_like_a_path() {
    use std::os::fd::AsRawFd;
    let dir = TempDir::new("fd");
    let path = dir.file("model.xnncache");
    let model = by_name("fc_f32");
    let expected = model.run(std::ptr::null_mut());
    // An empty file handed over as a descriptor is built in place.
    let file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&path).unwrap();
    for round in 0..2 {
        let mut o = options(None);
        o.fd = file.as_raw_fd();
        let cache = Cache::open_with(&o);
        model.register(&cache, true);
        let mut counting = Counting::wrap(cache.provider());
        assert_eq!(model.run(counting.provider()), expected);
        cache.finalize();
        let s = cache.stats();
        let want = if round == 0 { NEW } else { REUSED };
        assert_eq!(s.file_state as u64, want, "round {round}: {}", last_error());
        assert_eq!(counting.reserves.load(Ordering::Relaxed) == 0, round == 1);
    }
    drop(file);
    // The same file by path, then read-only through a read-only descriptor.
    assert_eq!(launch(&path, "fc_f32", "").get("reserves"), 0);
    let ro = std::fs::File::open(&path).unwrap();
    let mut o = options(None);
    o.fd = ro.as_raw_fd();
    o.flags = xnncache::capi::XNNCACHE_FLAG_READ_ONLY;
    let cache = Cache::open_with(&o);
    model.register(&cache, true);
    assert_eq!(model.run(cache.provider()), expected);
    assert_eq!(cache.stats().file_state as u64, REUSED);
}

/// Opens `path` in this process (registering `model`) and returns the state.
fn open_state(path: &Path, flags: u32) -> (u64, Cache) {
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    let mut o = options(Some(&c));
    o.flags = flags;
    let cache = Cache::open_with(&o);
    (cache.stats().file_state as u64, cache)
}

#[test]
fn every_flipped_header_or_index_byte_and_every_truncation_is_refused() {
    let dir = TempDir::new("corrupt");
    let path = dir.file("model.xnncache");
    launch(&path, "fc_f32,qc4", "");
    let good = std::fs::read(&path).unwrap();
    let (slot, header) = xnncache::format::pick_header([&good[0..256], &good[2048..2304]], good.len() as u64).unwrap();
    assert_eq!((slot, header.generation), (0, 1), "one commit: slot 1 is empty");
    let index = header.index_offset as usize..(header.index_offset + header.index_size) as usize;
    let victim = dir.file("victim.xnncache");
    let mut flips = 0;
    for i in (0..256).chain(index.clone()) {
        let mut bad = good.clone();
        bad[i] ^= 0x20;
        std::fs::write(&victim, &bad).unwrap();
        let (state, cache) = open_state(&victim, 0);
        assert_eq!(state, CORRUPT, "flipped byte {i} was not refused ({})", last_error());
        drop(cache);
        flips += 1;
    }
    assert!(flips > 300);
    // Truncated anywhere before the end of the commit: refused, never a SIGBUS.
    let len = header.data_end as usize;
    let mut cuts: Vec<usize> = vec![1, 100, 255, 256, 2048, 4096, 65536, 65537, len / 2, header.index_offset as usize, len - 1];
    cuts.extend((0..20).map(|k| 65536 + k * (len - 65536) / 20));
    for cut in cuts {
        std::fs::write(&victim, &good[..cut]).unwrap();
        let (state, cache) = open_state(&victim, 0);
        assert_eq!(state, CORRUPT, "truncated to {cut} of {len} was not refused");
        drop(cache);
    }
    // A flipped payload byte: found by verify (on demand, or at open with the flag).
    let mut bad = good.clone();
    bad[xnncache::format::DATA_START as usize + 100] ^= 1;
    std::fs::write(&victim, &bad).unwrap();
    let (state, cache) = open_state(&victim, 0);
    assert_eq!(state, REUSED, "without verify, payloads are not read at open");
    assert_eq!(xnncache::capi::xnncache_verify(cache.0), xnncache::Status::XNNCACHE_CORRUPT);
    assert!(last_error().contains("checksum"), "{}", last_error());
    drop(cache);
    let (state, _cache) = open_state(&victim, xnncache::capi::XNNCACHE_FLAG_VERIFY);
    assert_eq!(state, CORRUPT);
    // And the real file still verifies.
    let (state, cache) = open_state(&path, xnncache::capi::XNNCACHE_FLAG_VERIFY);
    assert_eq!(state, REUSED);
    assert_eq!(xnncache::capi::xnncache_verify(cache.0), xnncache::Status::XNNCACHE_OK);
}

#[test]
fn a_build_killed_at_any_point_leaves_the_last_commit_or_a_rebuild() {
    let dir = TempDir::new("crash");
    let path = dir.file("model.xnncache");
    // A first, complete commit.
    let base = launch(&path, "fc_f32", "");
    // Count the crash points of a launch that adds a second model.
    let probe_path = dir.file("probe.xnncache");
    std::fs::copy(&path, &probe_path).unwrap();
    let probe = launch(&probe_path, "fc_f32,mixed", "");
    let points = probe.get("points");
    assert!(points >= 8, "{probe:?}");
    let mut outcomes = HashMap::new();
    for k in 1..=points {
        let victim = dir.file(&format!("crash-{k}.xnncache"));
        std::fs::copy(&path, &victim).unwrap();
        let crashed = launch_with(&victim, "fc_f32,mixed", "", &[("XNNCACHE_CRASH_AT", &k.to_string())]);
        let out = crashed.expect_err("the launch should have been killed");
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(out.status.signal(), Some(libc::SIGKILL), "crash point {k}: {:?}", out.status);
        // The next launch: correct outputs (checked in the child) and either
        // the old commit, the new one, or a rebuild.
        let next = launch(&victim, "fc_f32,mixed", "");
        assert_eq!(next.get("digest"), probe.get("digest"), "crash point {k}");
        // A previous commit exists, so no kill may lose it (that is what the
        // second header slot is for): never a rebuild here.
        let state = next.get("file_state");
        assert_eq!(state, REUSED, "crash point {k}: a kill lost the previous commit");
        assert!(next.get("loaded") >= base.get("entries"), "crash point {k}: {next:?}");
        // Whether the killed launch's commit (mixed's 6 entries) was published.
        let published = next.get("loaded") > base.get("entries");
        *outcomes.entry((state, published)).or_insert(0) += 1;
        std::fs::remove_file(&victim).unwrap();
    }
    // Early kills keep the old commit; late ones publish the new one.
    assert!(outcomes.contains_key(&(REUSED, false)), "{outcomes:?}");
    assert!(outcomes.contains_key(&(REUSED, true)), "{outcomes:?}");
}

#[test]
fn two_processes_building_one_path_at_once() {
    let dir = TempDir::new("race");
    let path = dir.file("shared.xnncache");
    for round in 0..3 {
        let p1 = path.clone();
        let p2 = path.clone();
        let a = std::thread::spawn(move || launch(&p1, "mixed,qc8", ""));
        let b = std::thread::spawn(move || launch(&p2, "qc8,mixed,conv", ""));
        let (a, b) = (a.join().unwrap(), b.join().unwrap());
        assert!(a.get("entries") > 0 && b.get("entries") > 0, "round {round}");
        let (state, cache) = open_state(&path, xnncache::capi::XNNCACHE_FLAG_VERIFY);
        assert_eq!(state, REUSED, "round {round}: the file is not valid: {}", last_error());
        drop(cache);
    }
    // After the races, one more launch finds everything.
    assert_eq!(launch(&path, "mixed,qc8,conv", "").get("reserves"), mixed_without_look_up(), "only paths without look-up pack");
}

#[test]
fn compaction_keeps_what_this_session_used() {
    let dir = TempDir::new("compact");
    let path = dir.file("model.xnncache");
    launch(&path, "fc_f32,qc8,large", "");
    let big = std::fs::metadata(&path).unwrap().len();
    // A session that uses only fc_f32, then compacts.
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    let cache = Cache::open_with(&options(Some(&c)));
    let model = by_name("fc_f32");
    model.register(&cache, true);
    let expected = model.run(std::ptr::null_mut());
    assert_eq!(model.run(cache.provider()), expected);
    assert_eq!(xnncache::capi::xnncache_compact(cache.0), xnncache::Status::XNNCACHE_OK, "{}", last_error());
    // Runtimes of this session keep working on the old mapping.
    assert_eq!(model.run(cache.provider()), expected);
    drop(cache);
    let small = std::fs::metadata(&path).unwrap().len();
    assert!(small < big / 4, "{big} -> {small}");
    let after = launch(&path, "fc_f32", "verify");
    assert_eq!((after.get("file_state"), after.get("reserves")), (REUSED, 0));
    let dropped = launch(&path, "large", "");
    assert!(dropped.get("reserves") > 0, "large was not used by the compacting session");
}

#[test]
fn weights_in_use_are_never_overwritten_by_the_next_writer() {
    // Two caches on one path in one process take the writer lock in turn,
    // like two processes. The first packs weights it did not register (so
    // they are in the file but not in its index) and keeps its runtime; the
    // second then appends a model of its own. The first's weights must still
    // be intact: the next writer appends after everything the first used.
    let dir = TempDir::new("overwrite");
    let path = dir.file("shared.xnncache");
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    let (m1, m2) = (by_name("large"), by_name("qc8"));
    let (e1, e2) = (m1.run(std::ptr::null_mut()), m2.run(std::ptr::null_mut()));
    launch(&path, "fc_f32", ""); // an existing file, so no first-commit happens by itself
    let first = Cache::open_with(&options(Some(&c)));
    assert_eq!(first.stats().file_state as u64, REUSED);
    let mut rt1 = m1.create(first.provider()).unwrap();
    first.finalize();
    assert_eq!(rt1.infer().unwrap(), e1);
    assert_eq!(first.stats().not_persisted, 1);

    let second = Cache::open_with(&options(Some(&c)));
    m2.register(&second, true);
    assert_eq!(m2.run(second.provider()), e2);
    second.finalize();
    assert_eq!(second.stats().commits, 1, "{}", last_error());
    assert_eq!(rt1.infer().unwrap(), e1, "the second writer overwrote weights the first still uses");
    drop(rt1);
}

#[test]
fn automatic_compaction_at_close_above_the_threshold() {
    let dir = TempDir::new("autocompact");
    let path = dir.file("model.xnncache");
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    let model = by_name("fc_f32");
    let expected = model.run(std::ptr::null_mut());
    let session = |percent: u32| {
        let mut o = options(Some(&c));
        o.compact_percent = percent;
        let cache = Cache::open_with(&o);
        model.register(&cache, true);
        assert_eq!(model.run(cache.provider()), expected);
        cache.finalize();
    };
    launch(&path, "fc_f32,large", "");
    let big = std::fs::metadata(&path).unwrap().len();
    session(0); // off: nothing happens
    assert_eq!(std::fs::metadata(&path).unwrap().len(), big);
    session(99); // most of the file is unused, but not 99%
    assert_eq!(std::fs::metadata(&path).unwrap().len(), big);
    session(50);
    let small = std::fs::metadata(&path).unwrap().len();
    assert!(small < big / 4, "{big} -> {small}");
    assert_eq!(launch(&path, "fc_f32", "verify").get("reserves"), 0);
}

#[test]
fn a_damaged_newest_index_falls_back_to_the_previous_commit() {
    let dir = TempDir::new("fallback-slot");
    let path = dir.file("model.xnncache");
    let first = launch(&path, "fc_f32", "");
    launch(&path, "fc_f32,qc8", "");
    let mut bytes = std::fs::read(&path).unwrap();
    let (slot, newest) = xnncache::format::pick_header([&bytes[0..256], &bytes[2048..2304]], bytes.len() as u64).unwrap();
    assert_eq!((slot, newest.generation), (1, 2));
    bytes[newest.index_offset as usize + 30] ^= 0xFF;
    std::fs::write(&path, &bytes).unwrap();
    // A reader uses the commit before it; a writer never appends over the
    // newest commit's bytes (their writer may still map them): it rebuilds.
    let reader = launch(&path, "fc_f32", "readonly");
    assert_eq!(reader.get("file_state"), REUSED, "{}", reader.warning());
    assert_eq!(reader.get("loaded"), first.get("entries"), "the first commit is what remains");
    assert_eq!(reader.get("reserves"), 0);
    let writer = launch(&path, "fc_f32", "");
    assert_eq!(writer.get("file_state"), CORRUPT, "{}", writer.warning());
    assert_eq!(launch(&path, "fc_f32", "").get("file_state"), REUSED);
}

/// v3 XNNPACK converts fp16 (and, where this CPU lacks bf16 kernels, bf16)
/// constants to fp32 copies and says so through `alias_data`: a warm launch
/// finds the fp32 packings through the registered originals.
#[cfg(all(xnnpack_alias_data, xnnpack_cube_root))]
#[test]
fn weights_converted_to_fp32_are_found_by_a_warm_launch() {
    for model in ["f16", "bf16"] {
        let dir = TempDir::new(&format!("alias-{model}"));
        let path = dir.file("model.xnncache");
        let cold = launch(&path, model, "");
        if model == "bf16" && cold.get("aliases") == 0 {
            // This CPU runs the bf16 model without converting it: nothing to alias.
            println!("bf16: this CPU has bf16 kernels for every node; no fallback, no alias");
            continue;
        }
        assert!(cold.get("aliases") > 0, "{model}: XNNPACK converted no constant: {cold:?}");
        assert!(cold.get("reserves") > 0 && cold.get("not_persisted") == 0, "{model}: {cold:?}");
        let warm = launch(&path, model, "");
        assert_eq!(warm.get("file_state"), REUSED, "{}", warm.warning());
        assert_eq!(warm.get("digest"), cold.get("digest"), "{model}: outputs differ between launches");
        assert_eq!(warm.get("reserves"), 0, "{model}: the warm launch packed: {warm:?}");
        assert_eq!(warm.get("hits"), cold.get("entries"), "{model}: {warm:?}");
    }
}

/// The newest commit's index of the file at `path`.
fn committed_index(path: &Path) -> (xnncache::format::Header, xnncache::format::Index) {
    let file = std::fs::File::open(path).unwrap();
    let (header, _, index) = xnncache::store::read_any_committed(&file).unwrap();
    (header, index)
}

/// What `xnncache_list_names` reports for a cache opened on `path` before
/// any runtime exists.
fn listed_names(path: &Path) -> Vec<(String, Option<String>)> {
    unsafe extern "C" fn collect(user: *mut core::ffi::c_void, weights: *const core::ffi::c_char, bias: *const core::ffi::c_char) {
        // SAFETY: `user` is the Vec passed below; the names are C strings valid during the call.
        let (names, weights) = unsafe { (&mut *(user as *mut Vec<(String, Option<String>)>), std::ffi::CStr::from_ptr(weights)) };
        // SAFETY: as above; NULL when there is no bias name.
        let bias = (!bias.is_null()).then(|| unsafe { std::ffi::CStr::from_ptr(bias) }.to_str().unwrap().to_string());
        names.push((weights.to_str().unwrap().to_string(), bias));
    }
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    let cache = Cache::open_with(&options(Some(&c)));
    let mut names: Vec<(String, Option<String>)> = Vec::new();
    let s = xnncache::capi::xnncache_list_names(cache.0, Some(collect), (&mut names as *mut Vec<(String, Option<String>)>).cast());
    assert_eq!(s, xnncache::Status::XNNCACHE_OK, "{}", last_error());
    names
}

fn index_names(index: &xnncache::format::Index) -> Vec<(String, Option<String>)> {
    let mut names: Vec<_> = index.names.iter().map(|(_, n)| (n.weights.clone(), n.bias.clone())).collect();
    names.sort();
    names.dedup();
    names
}

/// The index names the packed weights it holds (what ExecuTorch's class
/// reports at initialize): each key made from weights registered by name
/// has a names record, a later open lists them before any runtime exists,
/// compaction keeps those it keeps, weights registered by content have none,
/// and a file of format version 1 (no names) is used as it is by a reader and
/// rebuilt by a writer (one format per file), naming every key it holds.
#[test]
fn the_index_names_the_weights_it_holds() {
    let dir = TempDir::new("names");
    let path = dir.file("model.xnncache");
    launch(&path, "fc_f32,qc4,conv", "");
    let (header, index) = committed_index(&path);
    assert!(!index.keys.is_empty());
    assert_eq!(index.names.len(), index.keys.len(), "a key without its names: {index:?}");
    let names = index_names(&index);
    assert!(names.iter().all(|(w, b)| !w.is_empty() && b.as_ref() != Some(w)), "{names:?}");
    assert!(names.iter().any(|(_, b)| b.is_some()), "no packing named its bias: {names:?}");
    assert_eq!(listed_names(&path), names, "xnncache_list_names and the index differ");

    // Registered by content: keys, no names.
    let by_content = dir.file("by-content.xnncache");
    launch(&by_content, "fc_f32,qc4,conv", "bycontent");
    let (_, unnamed) = committed_index(&by_content);
    assert!(!unnamed.keys.is_empty() && unnamed.names.is_empty(), "{unnamed:?}");
    assert!(listed_names(&by_content).is_empty());

    // Format version 1: the same commit without the names section.
    let v1 = dir.file("v1.xnncache");
    let mut bytes = std::fs::read(&path).unwrap();
    // (Version 3's encoding without names and programs, less their two counts.)
    let old = Index { names: Vec::new(), programs: Vec::new(), ..index.clone() }.encode();
    let old = &old[..old.len() - 16];
    let at = header.index_offset as usize;
    bytes[at..at + old.len()].copy_from_slice(old);
    bytes[at..at + 8].copy_from_slice(&xnncache::format::INDEX_MAGIC_V1);
    let v1_header = xnncache::format::Header { index_size: old.len() as u64, index_checksum: xxhash_rust::xxh3::xxh3_64(&bytes[at..at + old.len()]), ..header.clone() };
    let mut slot = v1_header.encode();
    slot[8..12].copy_from_slice(&1u32.to_ne_bytes());
    let sum = xxhash_rust::xxh3::xxh3_64(&slot[..248]);
    slot[248..].copy_from_slice(&sum.to_ne_bytes());
    for s in SLOT_OFFSETS {
        bytes[s as usize..s as usize + 256].copy_from_slice(&slot);
    }
    std::fs::write(&v1, &bytes).unwrap();
    assert!(listed_names(&v1).is_empty());
    // A reader uses it as it is; a writer of format 2 never appends to it
    // (one format per file): it rebuilds, and the new file names every key.
    let reader = launch(&v1, "fc_f32,qc4,conv", "readonly");
    assert_eq!((reader.get("file_state"), reader.get("reserves")), (REUSED, 0), "{}", reader.warning());
    let upgrade = launch(&v1, "fc_f32,qc4,conv", "");
    assert_eq!(upgrade.get("file_state"), INCOMPATIBLE, "{}", upgrade.warning());
    let warm = launch(&v1, "fc_f32,qc4,conv", "");
    assert_eq!((warm.get("file_state"), warm.get("reserves")), (REUSED, 0), "{}", warm.warning());
    let (_, upgraded) = committed_index(&v1);
    assert_eq!(upgraded.names.len(), upgraded.keys.len(), "the file written after a version-1 file names every key");

    // Compaction keeps the names of what it keeps.
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    let cache = Cache::open_with(&options(Some(&c)));
    let model = by_name("fc_f32");
    model.register(&cache, true);
    model.run(cache.provider());
    assert_eq!(xnncache::capi::xnncache_compact(cache.0), xnncache::Status::XNNCACHE_OK, "{}", last_error());
    drop(cache);
    let (_, compacted) = committed_index(&path);
    assert!(!compacted.keys.is_empty() && compacted.keys.len() < index.keys.len());
    assert_eq!(compacted.names.len(), compacted.keys.len());
    assert!(index_names(&compacted).iter().all(|n| names.contains(n)));
}

/// The share (0 to 1) of `path`'s bytes `[from, to)` that are in the page cache.
fn resident_share(path: &Path, from: u64, to: u64) -> f64 {
    use std::os::fd::AsRawFd;
    let file = std::fs::File::open(path).unwrap();
    let len = to as usize;
    // SAFETY: a fresh shared read-only mapping of the whole range, unmapped below; mincore reads no byte of it.
    unsafe {
        let map = libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ, libc::MAP_SHARED, file.as_raw_fd(), 0);
        assert_ne!(map, libc::MAP_FAILED);
        let page = libc::sysconf(libc::_SC_PAGESIZE) as usize;
        let mut pages = vec![0u8; len.div_ceil(page)];
        assert_eq!(libc::mincore(map, len, pages.as_mut_ptr().cast()), 0);
        libc::munmap(map, len);
        let wanted = &pages[from as usize / page..];
        wanted.iter().filter(|&&p| p & 1 != 0).count() as f64 / wanted.len() as f64
    }
}

/// Opens `path` with `flags` added to the usual options and waits for its
/// prefetch (`xnncache_wait`).
fn open_and_wait(path: &Path, flags: u32) -> Cache {
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    let mut o = options(Some(&c));
    o.flags |= flags;
    let cache = Cache::open_with(&o);
    assert_eq!(xnncache::capi::xnncache_wait(cache.0, u32::MAX), xnncache::Status::XNNCACHE_OK, "{}", last_error());
    cache
}

/// Drops `path`'s pages from the page cache (written back first).
fn evict(path: &Path) {
    use std::os::fd::AsRawFd;
    let file = std::fs::File::open(path).unwrap();
    file.sync_all().unwrap();
    // SAFETY: advice on our own descriptor; it reads no memory of ours.
    assert_eq!(unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) }, 0);
}

/// A warm launch whose file is in a page cache without large folios (tmpfs
/// at /dev/shm here, as Android's f2fs) maps the file's pages ahead, in the
/// background, so that its first inference does not fault them in 4 KiB
/// at a time (issue 27); a file that small models leave under 16 MiB is not
/// (the existing test below: nothing mapped).
#[test]
fn a_resident_file_without_large_folios_is_mapped_ahead() {
    let shm = Path::new("/dev/shm");
    if !shm.is_dir() || std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/shmem_enabled").is_ok_and(|s| !s.contains("[never]") && !s.contains("[deny]")) {
        return cannot_run("tmpfs at /dev/shm without huge pages (shmem_enabled never)");
    }
    let dir = TempDir(shm.join(format!("xnncache-map-ahead-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&dir.0);
    std::fs::create_dir_all(&dir.0).unwrap();
    let path = dir.file("model.xnncache");
    launch(&path, "huge", "");
    let (header, _) = committed_index(&path);
    let payloads = header.index_offset - xnncache::format::DATA_START;
    assert!(payloads >= 16 << 20, "the model packs {payloads} bytes");
    let cache = open_and_wait(&path, xnncache::capi::XNNCACHE_FLAG_NO_PREFETCH);
    let without = xnncache_tests::mapping_usage("/proc/self/smaps", &path).rss;
    drop(cache);
    assert!(without * 1024 < payloads / 4, "without prefetch, {without} KiB were mapped at open");
    let cache = open_and_wait(&path, 0);
    let mapped = xnncache_tests::mapping_usage("/proc/self/smaps", &path).rss;
    if std::env::var_os("XNNCACHE_UNDER_EMULATOR").is_some() {
        println!("under an emulator: {mapped} KiB mapped ahead (not checked)");
        return;
    }
    assert!(mapped * 1024 >= payloads, "the prefetch mapped {mapped} KiB of {payloads} bytes");
    // And the runtime finds everything, unchanged.
    let model = by_name("huge");
    model.register(&cache, true);
    let mut rt = model.create(cache.provider()).unwrap();
    assert_eq!(rt.infer().unwrap(), model.run(std::ptr::null_mut()));
    assert_eq!(cache.stats().packed_bytes, 0);
}

/// A warm launch brings the file's packed weights into memory in the
/// background, from open on (`xnncache_wait` waits for it): after the
/// file was dropped from the page cache, its payloads are resident again
/// without any runtime having read them. With XNNCACHE_FLAG_NO_PREFETCH
/// they are not; and a launch whose file is resident already maps nothing
/// for the prefetch (it only asks which pages are resident).
#[test]
fn a_warm_launch_brings_the_file_in_before_its_runtimes_ask() {
    let dir = TempDir::new("prefetch");
    let path = dir.file("model.xnncache");
    launch(&path, "fc_f32,qc8,large", "");
    let (header, _) = committed_index(&path);
    let payloads = (xnncache::format::DATA_START, header.index_offset);

    evict(&path);
    let evicted = resident_share(&path, payloads.0, payloads.1);
    if evicted > 0.5 {
        return cannot_run(&format!("a page cache that drops the file's pages on POSIX_FADV_DONTNEED ({:.0}% stayed)", evicted * 100.0));
    }
    let cache = open_and_wait(&path, xnncache::capi::XNNCACHE_FLAG_NO_PREFETCH);
    let without = resident_share(&path, payloads.0, payloads.1);
    drop(cache);
    assert!(without < 0.5, "without prefetch, {:.0}% of the payloads were read at open", without * 100.0);

    let cache = open_and_wait(&path, 0);
    let with = resident_share(&path, payloads.0, payloads.1);
    if std::env::var_os("XNNCACHE_UNDER_EMULATOR").is_some() {
        // qemu-user answers madvise hints with success and does nothing.
        println!("under an emulator: prefetch brought in {:.0}% (not checked)", with * 100.0);
        return;
    }
    assert_eq!(with, 1.0, "the prefetch left {:.1}% of the payloads out", (1.0 - with) * 100.0);
    let mapped = xnncache_tests::mapping_usage("/proc/self/smaps", &path).rss;
    assert!(mapped * 1024 >= payloads.1 - payloads.0, "the prefetch read the payloads but mapped {mapped} KiB");
    drop(cache);

    // Resident already: the prefetch maps nothing (the runtimes fault in
    // what they use, as without it).
    let cache = open_and_wait(&path, 0);
    let mapped = xnncache_tests::mapping_usage("/proc/self/smaps", &path).rss;
    assert!(mapped * 1024 < (payloads.1 - payloads.0) / 4, "a resident file's prefetch mapped {mapped} KiB");
    drop(cache);
}
