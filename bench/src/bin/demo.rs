//! The demo: the benchmark's `llm-q4` model (a decoder-like stack of 4-bit
//! fully connected layers) at half scale by default, launched twice in fresh
//! processes: cold (no cache file yet: XNNPACK packs, the file is written)
//! and warm (the file from the cold launch: every weight is found). Each
//! launch also creates the runtime without a cache, as the reference. Prints
//! both launches side by side; exits non-zero if any output differs.
//!
//! Usage: demo [--path FILE] [--scale F]

#[path = "../models.rs"]
mod models;

use std::collections::HashMap;
use std::process::Command;
use std::time::Instant;

use xnncache_tests::{file_mapping_usage, rollup, Cache, Model};

/// Half of llm-q4's dimensions: 8 blocks of 1024-wide layers, about 100 M weights.
const DEFAULT_SCALE: f64 = 0.5;

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

/// One launch, in this process: prints a `DEMO k=v ...` line.
fn launch(path: &std::path::Path) {
    let model: Model = models::by_name("llm-q4").expect("a benchmark model");
    // The constants are the app's own data: make them before measuring.
    xnncache_tests::init();
    model.materialize();
    // The reference: the same model without a cache.
    let anon = rollup("Anonymous");
    let t = Instant::now();
    let mut plain = model.create(std::ptr::null_mut()).expect("create without a cache");
    let plain_ms = t.elapsed().as_secs_f64() * 1e3;
    let plain_anon = rollup("Anonymous").saturating_sub(anon);
    let expected = plain.infer().expect("infer");
    drop(plain);

    let anon = rollup("Anonymous");
    let t = Instant::now();
    let cache = Cache::open(Some(path));
    model.register(&cache, true);
    let mut rt = model.create(cache.provider()).expect("create through xnncache");
    cache.start_finalize(); // the write-back runs in the background
    let create_ms = t.elapsed().as_secs_f64() * 1e3;
    let same = rt.infer().expect("infer") == expected;
    // The first inference ran while the file was being written; now wait
    // for the commit, and read when it became durable.
    cache.wait();
    let durable_ms = t.elapsed().as_secs_f64() * 1e3;
    let cache_anon = rollup("Anonymous").saturating_sub(anon);
    let s = cache.stats();
    let durable_ms = if s.commits > 0 { durable_ms } else { 0.0 };
    let (_, dirty, _) = file_mapping_usage(path.parent().unwrap());
    println!(
        "DEMO plain_ms={plain_ms:.2} plain_anon={plain_anon} create_ms={create_ms:.2} durable_ms={durable_ms:.2} anon={cache_anon} dirty={dirty} packed={} stored={} found={} file_state={} same={same}",
        s.packed_bytes, s.stored_bytes, s.found_bytes, s.file_state
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let dir = std::env::temp_dir().join("xnncache-demo");
    std::fs::create_dir_all(&dir).expect("create the demo folder");
    let path = arg("--path").map(std::path::PathBuf::from).unwrap_or_else(|| dir.join("llm-q4.xnncache"));
    let scale = arg("--scale").and_then(|s| s.parse().ok()).unwrap_or(DEFAULT_SCALE);
    models::set_scale(scale);
    if args.iter().any(|a| a == "--launch") {
        launch(&path);
        return;
    }

    let _ = std::fs::remove_file(&path);
    println!("xnncache demo on XNNPACK {}: llm-q4 at scale {scale}: 8 decoder blocks of 4-bit (qd8-f32-qc4w) fully connected layers", xnnpack_sys::PIN);
    println!("cache file: {}", path.display());
    let mut results = Vec::new();
    for (i, name) in ["cold (no cache file yet)", "warm (the cold launch's file)"].iter().enumerate() {
        print!("[{}/2] {name} launch ... ", i + 1);
        use std::io::Write;
        std::io::stdout().flush().ok();
        let out = Command::new(&args[0])
            .args(["--launch", "--scale", &scale.to_string(), "--path"])
            .arg(&path)
            .output()
            .expect("launch the demo again");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let line = stdout.lines().find_map(|l| l.strip_prefix("DEMO ")).unwrap_or_else(|| {
            eprintln!("failed: {:?}\n{stdout}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
            std::process::exit(2)
        });
        let fields: HashMap<String, String> = line.split(' ').filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k.into(), v.into())).collect();
        println!("done");
        results.push(fields);
    }
    let (cold, warm) = (&results[0], &results[1]);
    let num = |m: &HashMap<String, String>, k: &str| m[k].parse::<f64>().unwrap_or(0.0);
    println!();
    println!("{:<34} {:>14} {:>14} {:>14}", "", "no cache", "cold", "warm");
    println!("{:<34} {:>11.1} ms {:>11.1} ms {:>11.1} ms", "runtime ready (open+create+final.)", num(cold, "plain_ms"), num(cold, "create_ms"), num(warm, "create_ms"));
    let durable = |m: &HashMap<String, String>| if num(m, "durable_ms") > 0.0 { format!("{:.1} ms", num(m, "durable_ms")) } else { "(nothing new)".into() };
    println!("{:<34} {:>14} {:>14} {:>14}", "cache file committed (durable)", "-", durable(cold), durable(warm));
    println!("{:<34} {:>14} {:>14} {:>14}", "bytes packed by XNNPACK", "all (uncounted)", mib(num(cold, "packed") as u64), mib(num(warm, "packed") as u64));
    println!("{:<34} {:>14} {:>14} {:>14}", "anonymous memory after commit", mib(num(cold, "plain_anon") as u64), mib(num(cold, "anon") as u64), mib(num(warm, "anon") as u64));
    println!("{:<34} {:>14} {:>14} {:>14}", "dirty cache-file pages", "-", mib(num(cold, "dirty") as u64), mib(num(warm, "dirty") as u64));
    let same = |m: &HashMap<String, String>| m["same"] == "true";
    let verdict = |m: &HashMap<String, String>| if same(m) { "identical" } else { "DIFFERENT" };
    println!("{:<34} {:>14} {:>14} {:>14}", "outputs vs. no cache", "reference", verdict(cold), verdict(warm));
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    println!();
    println!("warm/no-cache speed-up: {:.0}x; cache file {} ({})", num(cold, "plain_ms") / num(warm, "create_ms").max(1e-3), path.display(), mib(size));
    std::process::exit(if same(cold) && same(warm) { 0 } else { 1 });
}
