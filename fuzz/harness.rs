//! Open-and-validate over arbitrary bytes: the function the fuzz target
//! (`fuzz/fuzz_targets/open_validate.rs`, libFuzzer on nightly) and the
//! corpus replay (`tests/fuzz_corpus.rs`, `cargo test` on stable) both call.
//! It depends on the `xnncache` crate only.
//!
//! An input is a compact cache file: byte 0 chooses which checksums the
//! harness repairs (so that mutations reach the checks behind them), bytes
//! `1..=2304` are the file's first 2304 bytes (both header slots), and the
//! rest lands at `DATA_START` (64 KiB), where payloads and indexes live. The
//! bytes in between are zero in every file xnncache writes. A shorter input
//! is a file of that many bytes.
//!
//! Then, on the file:
//! 1. `xnncache::store::read_committed` must not panic; what it accepts must
//!    be what FORMAT.md says a reader may use (every payload inside
//!    `[DATA_START, index offset)`, aligned, non-empty, not overlapping; every
//!    key naming a payload; the commit inside the file);
//! 2. `xnncache::Cache::open` (read-only, with verify) must return a cache,
//!    not an error, whose state agrees with step 1, and whose payloads read
//!    back (verify reads every byte of every payload through the read-only mapping of the file).

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use xnncache::abi::Generation;
use xnncache::format::{self, DATA_START, HEADER_SIZE, SLOT_OFFSETS};
use xnncache::store::FileState;
use xnncache::{Cache, CacheOptions};

/// The build identifier of every seed (written by `tests/fuzz_corpus.rs`).
pub const BUILD_ID: &[u8] = b"xnncache-fuzz-seed-build-identifier";
/// Bytes of the file the input's head covers: both header slots.
pub const HEAD: usize = SLOT_OFFSETS[1] as usize + HEADER_SIZE;

/// Byte 0 of an input: which checksums to repair before opening.
pub const FIX_PAYLOADS: u8 = 1;
pub const FIX_INDEX: u8 = 2;
pub const FIX_HEADER: u8 = 4;
/// Give both slots this machine's CPU identity (so that `Cache::open`, which
/// checks it, gets past it on any machine).
pub const FIX_CPU: u8 = 8;

/// The file an input stands for, and the repairs it asks for.
pub fn expand(input: &[u8]) -> (u8, Vec<u8>) {
    let Some((&fix, rest)) = input.split_first() else { return (0, Vec::new()) };
    if rest.len() <= HEAD {
        return (fix, rest.to_vec());
    }
    let mut file = vec![0u8; DATA_START as usize + rest.len() - HEAD];
    file[..HEAD].copy_from_slice(&rest[..HEAD]);
    file[DATA_START as usize..].copy_from_slice(&rest[HEAD..]);
    (fix, file)
}

/// The input for a file xnncache wrote (None if its gap is not zero).
pub fn compress(file: &[u8], fix: u8) -> Option<Vec<u8>> {
    let mut input = vec![fix];
    if file.len() <= HEAD {
        input.extend_from_slice(file);
        return Some(input);
    }
    let gap = &file[HEAD..file.len().min(DATA_START as usize)];
    if gap.iter().any(|&b| b != 0) {
        return None;
    }
    input.extend_from_slice(&file[..HEAD]);
    input.extend_from_slice(file.get(DATA_START as usize..).unwrap_or(&[]));
    Some(input)
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_ne_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_ne_bytes());
}

/// Repairs the checksums `fix` names, innermost first (payloads, then the
/// index that lists them, then the header that names the index), in every
/// slot whose fields point inside the file. Offsets are those of FORMAT.md.
pub fn repair(file: &mut [u8], fix: u8) {
    let len = file.len();
    for slot in SLOT_OFFSETS.map(|s| s as usize) {
        if slot + HEADER_SIZE > len {
            continue;
        }
        if fix & FIX_CPU != 0 {
            let id = xnncache::identity::cpu_identity();
            file[slot + 32..slot + 48].copy_from_slice(&id.to_ne_bytes());
        }
        let (Some(off), Some(size)) = (u64_at(file, slot + 116), u64_at(file, slot + 124)) else { continue };
        let index = usize::try_from(off).ok().zip(usize::try_from(size).ok()).and_then(|(o, s)| Some(o..o.checked_add(s)?)).filter(|r| r.end <= len);
        if let Some(index) = index {
            if fix & FIX_PAYLOADS != 0 && index.len() >= 24 {
                let np = u64_at(file, index.start + 8).unwrap_or(0) as usize;
                for i in 0..np.min((index.len() - 24) / 24) {
                    let rec = index.start + 24 + i * 24;
                    let (po, ps) = (u64_at(file, rec).unwrap_or(0), u64_at(file, rec + 8).unwrap_or(0));
                    if let Some(r) = usize::try_from(po).ok().zip(usize::try_from(ps).ok()).and_then(|(o, s)| Some(o..o.checked_add(s)?)).filter(|r| r.end <= len) {
                        let sum = xxhash_rust::xxh3::xxh3_64(&file[r]);
                        put_u64(file, rec + 16, sum);
                    }
                }
            }
            if fix & FIX_INDEX != 0 {
                let sum = xxhash_rust::xxh3::xxh3_64(&file[index]);
                put_u64(file, slot + 132, sum);
            }
        }
        if fix & (FIX_HEADER | FIX_CPU) != 0 {
            let sum = xxhash_rust::xxh3::xxh3_64(&file[slot..slot + HEADER_SIZE - 8]);
            put_u64(file, slot + HEADER_SIZE - 8, sum);
        }
    }
}

/// What opening the input's file came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Refused by validation (corrupt or incompatible).
    Refused,
    /// A commit was accepted and mapped; this many payloads were verified.
    Accepted { payloads: usize },
}

/// A scratch file for this process (and thread), on a memory file system
/// when there is one.
pub fn scratch() -> PathBuf {
    let base = if Path::new("/dev/shm").is_dir() { PathBuf::from("/dev/shm") } else { std::env::temp_dir() };
    base.join(format!("xnncache-fuzz-{}-{:?}.xnncache", std::process::id(), std::thread::current().id()).replace(['(', ')'], ""))
}

/// The compatibility `Cache::open` asks for: the seeds' build identifier,
/// this machine's CPU identity, and the ABI generation the file's slot 0
/// claims (the one the fuzzer may change). Inputs made on another kind of
/// CPU get past the compatibility check only with `FIX_CPU`.
fn wanted(file: &[u8]) -> (format::Compat, Generation) {
    let generation = match file.get(20..24).map(|b| u32::from_ne_bytes(b.try_into().unwrap())) {
        Some(2) => Generation::V2,
        Some(3) => Generation::V3,
        _ => Generation::V1,
    };
    let cpu_id = xnncache::identity::cpu_identity();
    (format::Compat { abi_generation: generation.number(), build_id: BUILD_ID.to_vec(), cpu_id }, generation)
}

/// Opens and validates the input's file at `path` (overwritten). Panics
/// when something FORMAT.md promises does not hold.
pub fn open_and_validate(input: &[u8], path: &Path) -> Outcome {
    let (fix, mut file) = expand(input);
    repair(&mut file, fix);
    std::fs::write(path, &file).expect("write the scratch file");
    let len = file.len() as u64;
    let (compat, generation) = wanted(&file);

    // 1. The reader.
    let f = std::fs::File::open(path).expect("open the scratch file");
    let read = xnncache::store::read_committed(&f, &compat);
    if let Ok((header, slot, index)) = &read {
        assert!(*slot < 2);
        assert!(header.data_end <= len, "{header:?} past the file's {len} bytes");
        let index_end = header.index_offset.checked_add(header.index_size).expect("index end overflows");
        assert!(header.index_offset >= DATA_START && index_end <= header.data_end, "{header:?}");
        let mut spans: Vec<(u64, u64)> = Vec::new();
        for p in &index.payloads {
            let end = p.offset.checked_add(p.size).expect("payload end overflows");
            assert!(p.size > 0 && p.offset >= DATA_START && p.offset % format::PAYLOAD_ALIGN == 0 && end <= header.index_offset, "{p:?} in {header:?}");
            spans.push((p.offset, end));
        }
        spans.sort_unstable();
        assert!(spans.windows(2).all(|w| w[0].1 <= w[1].0), "payloads overlap: {spans:?}");
        assert!(index.keys.iter().all(|k| (k.payload as usize) < index.payloads.len()), "a key names no payload");
    }

    // 2. The cache, read-only (the file stays as it is), verifying payloads.
    let mut options = CacheOptions::file(path, generation);
    options.build_id = BUILD_ID.to_vec();
    options.read_only = true;
    options.verify = true;
    // A small first reservation: the default 8 GiB of address space costs time per open.
    options.reservation = Some(16 << 20);
    let cache = Cache::open(&options).expect("Cache::open never fails on a bad file: it falls back");
    let state = cache.stats().file_state;
    let outcome = match read {
        Ok((_, _, index)) => {
            let payloads_ok = index.payloads.iter().all(|p| {
                let bytes = &file[p.offset as usize..(p.offset + p.size) as usize];
                xxhash_rust::xxh3::xxh3_64(bytes) == p.checksum
            });
            let want = if payloads_ok { FileState::XNNCACHE_FILE_REUSED } else { FileState::XNNCACHE_FILE_UNUSABLE };
            assert_eq!(state, want as u32, "read_committed and Cache::open disagree (payload checksums {payloads_ok})");
            if payloads_ok {
                assert!(cache.verify().is_ok());
                Outcome::Accepted { payloads: index.payloads.len() }
            } else {
                Outcome::Refused
            }
        }
        Err(_) => {
            assert_ne!(state, FileState::XNNCACHE_FILE_REUSED as u32, "Cache::open used a file read_committed refused");
            Outcome::Refused
        }
    };
    drop(cache);
    outcome
}
