//! Reliability battery, big files (issue 12): offsets and sizes past 32 bits.
//!
//! - In `cargo test`: a real cache file relaid as a sparse file whose
//!   payloads and index lie past 4 GiB (a few hundred KiB on disk): read,
//!   mapped, verified and used by a runtime on 64-bit; on a 32-bit target
//!   the reader refuses it as incompatible (a file larger than the address
//!   space), which `src/store.rs`'s `read_committed_at` checks first.
//! - At full size (`#[ignore]`, run by `scripts/reliability.sh --full` or
//!   `--big`): eight 576 MiB layers packed by XNNPACK through xnncache, one
//!   launch each, grow one file past 4.5 GiB; it is reopened with verify
//!   (every payload's checksum) and every layer is found by look-up with
//!   outputs bit-identical to a runtime without a cache. The file is deleted
//!   afterwards.

use std::sync::atomic::Ordering;

use xnncache::format::{Header, Index, Payload, DATA_START, PAYLOAD_ALIGN, SLOT_OFFSETS};
use xnncache_tests::battery::report;
use xnncache_tests::models::by_name;
use xnncache_tests::{last_error, options, Builder, Cache, Counting, Model, TempDir};

const REUSED: u32 = xnncache::store::FileState::XNNCACHE_FILE_REUSED as u32;
const FOUR_GIB: u64 = 1 << 32;

fn open(path: &std::path::Path, flags: u32) -> Cache {
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    let mut o = options(Some(&c));
    o.flags = flags;
    Cache::open_with(&o)
}

/// A file with `good`'s commit, its payloads moved `shift` bytes further (a
/// hole below them), one header slot naming it.
fn relay(good: &[u8], shift: u64) -> Vec<(u64, Vec<u8>)> {
    let slot = |i: usize| &good[SLOT_OFFSETS[i] as usize..][..256];
    let (_, h) = xnncache::format::pick_header([slot(0), slot(1)], good.len() as u64).unwrap();
    let index = Index::decode(&good[h.index_offset as usize..(h.index_offset + h.index_size) as usize], &h).unwrap();
    let mut pieces = Vec::new();
    let mut moved = Index { payloads: Vec::new(), keys: index.keys.clone(), names: index.names.clone(), programs: index.programs.clone() };
    for p in &index.payloads {
        let bytes = good[p.offset as usize..(p.offset + p.size) as usize].to_vec();
        moved.payloads.push(Payload { offset: p.offset + shift, ..*p });
        pieces.push((p.offset + shift, bytes));
    }
    let end = moved.payloads.iter().map(|p| p.offset + p.size).max().unwrap();
    let index_offset = end.div_ceil(PAYLOAD_ALIGN) * PAYLOAD_ALIGN;
    let bytes = moved.encode();
    let header = Header {
        generation: 1,
        compat: h.compat.clone(),
        index_offset,
        index_size: bytes.len() as u64,
        index_checksum: xxhash_rust::xxh3::xxh3_64(&bytes),
        data_end: index_offset + bytes.len() as u64,
    };
    pieces.push((index_offset, bytes));
    pieces.push((SLOT_OFFSETS[0], header.encode().to_vec()));
    pieces
}

#[test]
fn a_sparse_file_past_4_gib_is_used_on_64_bit() {
    let dir = TempDir::new("battery-sparse");
    let small = dir.file("small.xnncache");
    let model = by_name("fc_f32");
    let expected = model.run(std::ptr::null_mut());
    {
        let cache = open(&small, 0);
        model.register(&cache, true);
        assert_eq!(model.run(cache.provider()), expected);
        cache.finalize();
    }
    let big = dir.file("big.xnncache");
    let shift = FOUR_GIB + (1 << 20) - DATA_START;
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::create(&big).unwrap();
        for (at, bytes) in relay(&std::fs::read(&small).unwrap(), shift) {
            f.write_all_at(&bytes, at).unwrap();
        }
    }
    let len = std::fs::metadata(&big).unwrap().len();
    assert!(len > FOUR_GIB);
    let want = xnncache::format::Compat {
        abi_generation: xnncache_tests::xnnpack::generation(),
        build_id: xnncache_tests::build_id().to_vec(),
        cpu_id: xnncache::identity::cpu_identity(),
    };
    let read = xnncache::store::read_committed(&std::fs::File::open(&big).unwrap(), &want);
    #[cfg(target_pointer_width = "64")]
    {
        let (header, _, index) = read.unwrap_or_else(|e| panic!("{e:?}"));
        assert!(header.index_offset > FOUR_GIB && index.payloads.iter().all(|p| p.offset > FOUR_GIB));
        // Mapped, verified, and found by look-up at those offsets.
        let cache = open(&big, xnncache::capi::XNNCACHE_FLAG_VERIFY);
        assert_eq!(cache.stats().file_state, REUSED, "{}", last_error());
        model.register(&cache, true);
        let mut counting = Counting::wrap(cache.provider());
        assert_eq!(model.run(counting.provider()), expected);
        assert_eq!(counting.reserves.load(Ordering::Relaxed), 0, "the weight was not found past 4 GiB");
        assert_eq!(xnncache::capi::xnncache_verify(cache.0), xnncache::Status::XNNCACHE_OK);
        drop(cache);
        assert_eq!(std::fs::metadata(&big).unwrap().len(), len, "a launch that added nothing changed the file");
    }
    #[cfg(target_pointer_width = "32")]
    assert!(matches!(read, Err(xnncache::format::Refusal::Incompatible(_))), "{read:?}");
    report("bigfiles_sparse", vec![("file_bytes", len.into()), ("payload_offset_past_4_gib", shift.into())]);
}

macro_rules! layers {
    ($($name:ident = $seed:literal),*) => {
        $(fn $name(b: &mut Builder) {
            let input = b.input(&[1, IN]);
            let filter = b.f32_const_seeded(&[OUT, IN], 0.01, $seed);
            let output = b.output(&[1, OUT]);
            b.fully_connected(input, filter, None, output, 0);
        })*
        const LAYERS: &[(&str, fn(&mut Builder))] = &[$((stringify!($name), $name)),*];
    };
}

/// 8192 × 18432 fp32: 576 MiB a layer.
const OUT: usize = 8192;
const IN: usize = 18432;
layers!(layer0 = 90, layer1 = 91, layer2 = 92, layer3 = 93, layer4 = 94, layer5 = 95, layer6 = 96, layer7 = 97);

#[test]
#[ignore = "writes a 4.6 GiB file; run by scripts/reliability.sh --full / --big"]
fn a_cache_past_4_gib_is_built_reopened_and_verified() {
    let dir = TempDir::new("battery-big");
    let path = dir.file("big.xnncache");
    let started = std::time::Instant::now();
    let mut expected = Vec::new();
    // One launch per layer, each appending its layer and committing.
    for &(name, define) in LAYERS {
        let model = Model::named(name, define);
        let want = model.run(std::ptr::null_mut());
        let cache = open(&path, 0);
        model.register(&cache, true);
        assert_eq!(model.run(cache.provider()), want, "{name}: outputs through the cache");
        cache.finalize();
        assert_eq!(cache.stats().heap_fallback_bytes, 0, "{name}: the file did not take the layer: {}", last_error());
        drop(cache);
        expected.push(want);
    }
    let built_s = started.elapsed().as_secs();
    let len = std::fs::metadata(&path).unwrap().len();
    assert!(len > FOUR_GIB + (256 << 20), "{len} bytes");
    let bytes_head = {
        use std::os::unix::fs::FileExt;
        let mut b = vec![0u8; 2304];
        std::fs::File::open(&path).unwrap().read_exact_at(&mut b, 0).unwrap();
        b
    };
    let (_, header) = xnncache::format::pick_header([&bytes_head[0..256], &bytes_head[2048..2304]], len).unwrap();
    assert!(header.index_offset > FOUR_GIB && header.data_end > FOUR_GIB, "{header:?}");

    // Reopened with verify (every payload's checksum), each layer found.
    let started = std::time::Instant::now();
    let cache = open(&path, xnncache::capi::XNNCACHE_FLAG_VERIFY);
    let s = cache.stats();
    assert_eq!(s.file_state, REUSED, "{}", last_error());
    assert_eq!(s.loaded_entries, LAYERS.len() as u64);
    let verified_s = started.elapsed().as_secs();
    for (&(name, define), want) in LAYERS.iter().zip(&expected) {
        let model = Model::named(name, define);
        model.register(&cache, true);
        let mut counting = Counting::wrap(cache.provider());
        assert_eq!(&model.run(counting.provider()), want, "{name}: outputs after reopening");
        assert_eq!(counting.reserves.load(Ordering::Relaxed), 0, "{name} was packed again");
        model.unregister(&cache);
    }
    assert_eq!(xnncache::capi::xnncache_verify(cache.0), xnncache::Status::XNNCACHE_OK);
    drop(cache);
    std::fs::remove_file(&path).unwrap();
    report(
        "bigfiles_real",
        vec![
            ("layers", LAYERS.len().into()),
            ("file_bytes", len.into()),
            ("index_offset", header.index_offset.into()),
            ("build_seconds", built_s.into()),
            ("open_with_verify_seconds", verified_s.into()),
        ],
    );
}
