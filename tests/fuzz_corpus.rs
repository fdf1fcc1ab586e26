//! The fuzz corpus on stable: every file of `fuzz/corpus/open_validate/`
//! (a minimised corpus of the fuzz target, kept in the repository) goes
//! through the same open-and-validate function as the fuzz target
//! (`fuzz/harness.rs`), which panics when a promise of FORMAT.md breaks.
//!
//! `write_fuzz_seeds` (ignored; `scripts/reliability.sh --fuzz` runs it)
//! writes the seeds the fuzzer starts from: real cache files built by
//! XNNPACK runtimes through xnncache, of tiny models (so that the payloads
//! stay small), with one to three commits.

#[path = "../fuzz/harness.rs"]
mod harness;

use std::path::{Path, PathBuf};

use xnncache_tests::models::by_name;
use xnncache_tests::{options, Builder, Cache, Model, TempDir};

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/open_validate")
}

#[test]
fn the_fuzz_corpus_opens_cleanly() {
    let dir = corpus_dir();
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())).map(|e| e.unwrap().path()).collect();
    files.sort();
    assert!(files.len() >= 10, "the corpus has {} files", files.len());
    let scratch = harness::scratch();
    let mut accepted = 0usize;
    for f in &files {
        let input = std::fs::read(f).unwrap();
        let outcome = std::panic::catch_unwind(|| harness::open_and_validate(&input, &scratch));
        match outcome {
            Ok(harness::Outcome::Accepted { .. }) => accepted += 1,
            Ok(harness::Outcome::Refused) => {}
            Err(_) => panic!("{} broke a promise (see the message above)", f.display()),
        }
    }
    let _ = std::fs::remove_file(&scratch);
    // The corpus reaches past validation: some of its files are used.
    assert!(accepted > 0, "no corpus file was accepted");
    xnncache_tests::battery::report("fuzz_corpus_replay", vec![("files", files.len().into()), ("accepted", accepted.into())]);
}

#[test]
fn real_cache_files_round_trip_through_the_harness() {
    // What the seeds are: a real file compresses, and opens as accepted.
    let dir = TempDir::new("fuzz-roundtrip");
    let files = build_seed_files(&dir.0);
    let scratch = dir.file("scratch.xnncache");
    for (name, bytes) in &files {
        let input = harness::compress(bytes, harness::FIX_CPU).unwrap_or_else(|| panic!("{name}: the gap is not zero"));
        let (_, back) = harness::expand(&input);
        assert_eq!(&back, bytes, "{name}");
        assert!(matches!(harness::open_and_validate(&input, &scratch), harness::Outcome::Accepted { payloads } if payloads > 0), "{name}");
        // Without the CPU repair: made on this machine, so accepted too.
        assert!(matches!(harness::open_and_validate(&harness::compress(bytes, 0).unwrap(), &scratch), harness::Outcome::Accepted { .. }), "{name}");
    }
}

fn tiny_fc() -> Model {
    Model::named("tiny_fc", |b: &mut Builder| {
        let input = b.input(&[1, 8]);
        let filter = b.f32_const(&[4, 8], 0.1);
        let bias = b.f32_const(&[4], 1.0);
        let output = b.output(&[1, 4]);
        b.fully_connected(input, filter, Some(bias), output, 0);
    })
}

fn tiny_qc8() -> Model {
    Model::named("tiny_qc8", |b: &mut Builder| {
        let input = b.input(&[1, 16]);
        let q = b.dynamic_qd8(input, &[1, 16]);
        let filter = b.qc8_const(&[8, 16]);
        let output = b.output(&[1, 8]);
        b.fully_connected(q, filter, None, output, 0);
    })
}

fn tiny_conv() -> Model {
    Model::named("tiny_conv", |b: &mut Builder| {
        let input = b.input(&[1, 4, 4, 2]);
        let filter = b.f32_const(&[4, 3, 3, 2], 0.1);
        let output = b.output(&[1, 4, 4, 4]);
        b.conv2d(input, filter, None, output, 3, 1, 1, 2, 4);
    })
}

/// Real cache files of tiny models with the seeds' build identifier: one,
/// two and three commits, by name and by content.
fn build_seed_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let models = [tiny_fc(), tiny_qc8(), tiny_conv()];
    let plans: &[(&str, &[&[usize]], bool)] = &[
        ("one-commit", &[&[0]], true),
        ("two-commits", &[&[0], &[1]], true),
        ("three-commits", &[&[0], &[1], &[2]], true),
        ("by-content", &[&[0, 2]], false),
        ("two-commits-by-content", &[&[2], &[0, 1]], false),
    ];
    let mut out = Vec::new();
    for (name, launches, by_name_) in plans {
        let path = dir.join(format!("{name}.xnncache"));
        let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
        for launch in *launches {
            let mut o = options(Some(&c));
            o.build_id = harness::BUILD_ID.as_ptr().cast();
            o.build_id_size = harness::BUILD_ID.len();
            let cache = Cache::open_with(&o);
            for &m in *launch {
                models[m].register(&cache, *by_name_);
                let expected = models[m].run(std::ptr::null_mut());
                assert_eq!(models[m].run(cache.provider()), expected);
            }
            cache.finalize();
        }
        out.push((name.to_string(), std::fs::read(&path).unwrap()));
    }
    let _ = by_name; // the big models are not used: seeds must stay small
    out
}

/// Writes the fuzzer's seeds (`T_SEEDS_DIR`, default `fuzz/seeds/open_validate`).
#[test]
#[ignore = "writes the fuzz seeds; run by scripts/reliability.sh --fuzz"]
fn write_fuzz_seeds() {
    let out = std::env::var_os("T_SEEDS_DIR").map_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/open_validate"), PathBuf::from);
    std::fs::create_dir_all(&out).unwrap();
    let dir = TempDir::new("fuzz-seeds");
    for (name, bytes) in build_seed_files(&dir.0) {
        for (tag, fix) in [("asis", 0), ("cpu", harness::FIX_CPU), ("fixall", 0xf)] {
            let input = harness::compress(&bytes, fix).expect("the gap is zero");
            std::fs::write(out.join(format!("{name}-{tag}")), input).unwrap();
        }
    }
}
