//! The demo: a decoder-like stack of 4-bit fully connected layers, created
//! without a cache, then through xnncache on a file (first runtime packs,
//! second finds everything by look-up), with the time and memory each costs.
//! Exits non-zero if any output differs from the runtime without a cache.

use std::time::Instant;

use xnncache_tests::{file_mapping_usage, rollup, Builder, Cache, Model};

const DIM: usize = 1024;
const FFN: usize = 2816;
const BLOCKS: usize = 4;

fn llm_q4(b: &mut Builder) {
    let mut x = b.input(&[1, DIM]);
    for _ in 0..BLOCKS {
        for (from, to) in [(DIM, DIM), (DIM, DIM), (DIM, DIM), (DIM, DIM), (DIM, FFN), (FFN, DIM)] {
            let q = b.dynamic_qd8(x, &[1, from]);
            let w = b.qc4_const(&[to, from]);
            let y = b.tensor(&[1, to]);
            b.fully_connected(q, w, None, y, 0);
            x = y;
        }
    }
    let out = b.output(&[1, DIM]);
    let w = b.f32_const(&[DIM, DIM], 0.01);
    b.fully_connected(x, w, None, out, 0);
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

fn main() {
    let path = std::env::args().nth(1).map(std::path::PathBuf::from).unwrap_or_else(|| std::env::temp_dir().join("xnncache-demo.bin"));
    let model = Model::new(llm_q4);
    println!("xnncache demo: {BLOCKS} decoder blocks of 4-bit fully connected layers ({DIM}x{DIM}, {DIM}x{FFN}, {FFN}x{DIM})");

    let anon = rollup("Anonymous");
    let t = Instant::now();
    let mut plain = model.create(std::ptr::null_mut()).expect("create without a cache");
    let plain_ms = t.elapsed().as_secs_f64() * 1e3;
    let plain_anon = rollup("Anonymous").saturating_sub(anon);
    let expected = plain.infer().expect("infer");
    drop(plain);

    let cache = Cache::open(Some(&path));
    let anon = rollup("Anonymous");
    let t = Instant::now();
    let mut first = model.create(cache.provider()).expect("create through xnncache");
    cache.finalize();
    let first_ms = t.elapsed().as_secs_f64() * 1e3;
    let cache_anon = rollup("Anonymous").saturating_sub(anon);
    let t = Instant::now();
    let mut second = model.create(cache.provider()).expect("second runtime");
    let second_ms = t.elapsed().as_secs_f64() * 1e3;
    let ok = first.infer().expect("infer") == expected && second.infer().expect("infer") == expected;
    let s = cache.stats();
    let (rss, dirty, _) = file_mapping_usage(&path);

    println!();
    println!("{:<44} {:>12} {:>22}", "runtime", "create", "anonymous memory added");
    println!("{:<44} {:>9.1} ms {:>22}", "without a cache (XNNPACK packs to the heap)", plain_ms, mib(plain_anon));
    println!("{:<44} {:>9.1} ms {:>22}", "xnncache, first runtime (packs + finalize)", first_ms, mib(cache_anon));
    println!("{:<44} {:>9.1} ms {:>22}", "xnncache, second runtime (all look-ups hit)", second_ms, "-");
    println!();
    println!("cache file      {} ({})", path.display(), mib(s.file_size));
    println!("packed weights  {} in {} entries; {} found by look-up; {} duplicates folded", mib(s.stored_bytes), s.entries, mib(s.found_bytes), s.duplicates_folded);
    println!("file pages      {} resident, {} dirty after finalize", mib(rss), mib(dirty));
    println!("outputs         {}", if ok { "identical to the runtime without a cache" } else { "DIFFERENT from the runtime without a cache" });
    drop((first, second));
    drop(cache);
    let _ = std::fs::remove_file(&path);
    std::process::exit(if ok { 0 } else { 1 });
}
