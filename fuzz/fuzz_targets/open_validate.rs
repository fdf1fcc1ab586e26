//! Fuzz target: arbitrary bytes as a cache file, opened and validated by
//! `fuzz/harness.rs` (shared with `tests/fuzz_corpus.rs`, which replays the
//! kept corpus on stable). Run it with `scripts/reliability.sh --fuzz`.
#![no_main]

#[path = "../harness.rs"]
mod harness;

use std::sync::OnceLock;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    static SCRATCH: OnceLock<std::path::PathBuf> = OnceLock::new();
    let path = SCRATCH.get_or_init(harness::scratch);
    harness::open_and_validate(data, path);
});
