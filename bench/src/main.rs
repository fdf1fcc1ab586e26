//! The benchmark: every weights-cache strategy side by side, each run in a
//! fresh process, on generated models.
//!
//! ```text
//! cargo run --release -p xnncache-bench -- [--model M[,M...]] [--strategy S[,S...]]
//!                                          [--scale F] [--runs N] [--json]
//! ```
//!
//! Strategies: `none` (no cache), `xnnpack` (XNNPACK's own weights cache),
//! `memory` (xnncache without a file), `cold` (xnncache, no file yet), `warm`
//! (the file of an earlier process, in the page cache), `warm-evicted` (the
//! same after `posix_fadvise(DONTNEED)` dropped the file's pages), `floor` (a
//! second runtime in a process whose cache a first runtime filled),
//! `warm-verify` (`warm` with `XNNCACHE_FLAG_VERIFY`: every payload's
//! checksum at open; the report gives its cost per GiB).

mod models;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use xnncache_tests::{file_mapping_usage, mapping_usage, rollup, Cache, Model};
use xnnpack_sys as x;

const STRATEGIES: [&str; 8] = ["none", "xnnpack", "memory", "cold", "warm", "warm-evicted", "warm-verify", "floor"];
const STEADY_RUNS: usize = 15;

/// One child's measurements. `None` where not measured.
#[derive(Clone, Debug, Default)]
struct Sample {
    /// Runtime ready: everything before the first inference.
    create_ms: f64,
    first_run_ms: f64,
    /// Median inference right after creation (while a cold cache writes back).
    during_run_ms: f64,
    /// Median inference once the write-back is done.
    steady_run_ms: f64,
    /// From the start until the cache file's commit was durable (cold only).
    commit_ms: Option<f64>,
    /// Growth of anonymous memory right after creation (staged packed bytes).
    anon_peak_bytes: u64,
    packed_bytes: Option<u64>,
    anon_bytes: u64,
    dirty_bytes: u64,
    file_rss_bytes: Option<u64>,
    /// Dirty bytes of the cache file's own mappings.
    file_dirty_bytes: Option<u64>,
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

fn dirty() -> u64 {
    rollup("Private_Dirty") + rollup("Shared_Dirty")
}

/// Drops the file's pages from the page cache (they are clean: nothing maps them now).
fn evict(path: &Path) {
    if let Ok(f) = std::fs::File::open(path) {
        // SAFETY: fadvise takes a descriptor and a range; it reads no memory of ours.
        unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    }
}

/// Runs one strategy in this process and prints `SAMPLE ...`. With `hold`,
/// waits for a line on stdin before exiting (so that the parent can read
/// this process's memory while the runtime lives).
fn child(model: &Model, strategy: &str, path: &Path, hold: bool) {
    xnncache_tests::init();
    model.materialize();
    if strategy == "warm-evicted" {
        evict(path);
    }
    let (anon0, dirty0) = (rollup("Anonymous"), dirty());
    let mut cache = None;
    let mut xnn_cache: x::xnn_weights_cache_t = std::ptr::null_mut();
    let mut keep = None;
    let t = Instant::now();
    let mut created = Instant::now();
    let start_unix_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64() * 1e3);
    let mut rt = match strategy {
        "none" => model.create(std::ptr::null_mut()).expect("create"),
        "xnnpack" => {
            // SAFETY: out-pointer to a local; deleted after the runtime below.
            assert_eq!(unsafe { x::xnn_create_weights_cache(&mut xnn_cache) }, x::xnn_status_success);
            let rt = model.create(xnn_cache).expect("create");
            // SAFETY: the cache was made by XNNPACK itself.
            let s = unsafe { x::xnn_finalize_weights_cache(xnn_cache, x::xnn_weights_cache_finalization_kind_hard) };
            assert_eq!(s, x::xnn_status_success);
            rt
        }
        "memory" | "cold" | "warm" | "warm-evicted" | "warm-verify" | "floor" => {
            let mut phases = vec![("start", Instant::now())];
            let c = if strategy == "warm-verify" {
                let p = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
                let mut o = xnncache_tests::options(Some(&p));
                o.flags = xnncache::capi::XNNCACHE_FLAG_VERIFY;
                Cache::open_with(&o)
            } else {
                Cache::open(if matches!(strategy, "memory" | "floor") { None } else { Some(path) })
            };
            phases.push(("open", Instant::now()));
            model.register(&c, true);
            phases.push(("register", Instant::now()));
            if strategy == "floor" {
                keep = Some(model.create(c.provider()).expect("create"));
                c.finalize();
                created = Instant::now();
            }
            let rt = model.create(c.provider()).expect("create");
            phases.push(("create", Instant::now()));
            if strategy != "floor" {
                c.start_finalize(); // the write-back runs in the background
            }
            phases.push(("finalize", Instant::now()));
            if std::env::var_os("BENCH_PHASES").is_some() {
                let split: Vec<String> = phases.windows(2).map(|w| format!("{} {:.3} ms", w[1].0, (w[1].1 - w[0].1).as_secs_f64() * 1e3)).collect();
                eprintln!("{strategy}: {}", split.join(", "));
            }
            cache = Some(c);
            rt
        }
        other => panic!("unknown strategy {other}"),
    };
    let create_ms = if strategy == "floor" { ms(created) } else { ms(t) };
    let anon_peak = rollup("Anonymous").saturating_sub(anon0);
    let t = Instant::now();
    rt.infer().expect("first inference");
    let first_run_ms = ms(t);
    let mut runs = |n: usize| -> f64 {
        let mut v: Vec<f64> = (0..n)
            .map(|_| {
                let t = Instant::now();
                rt.infer().expect("inference");
                ms(t)
            })
            .collect();
        v.sort_by(f64::total_cmp);
        v[n / 2]
    };
    let during = runs(STEADY_RUNS);
    // The moment the file's commit was durable, from the cache's own clock.
    let commit_ms = cache.as_ref().and_then(|c| {
        c.wait();
        let s = c.stats();
        (s.commits > 0 && strategy == "cold").then_some(s.last_commit_unix_ms as f64 - start_unix_ms)
    });
    let (anon1, dirty1) = (rollup("Anonymous"), dirty());
    let steady = runs(STEADY_RUNS);
    let file_usage = matches!(strategy, "cold" | "warm" | "warm-evicted" | "warm-verify").then(|| file_mapping_usage(path.parent().unwrap()));
    let (file_rss, file_dirty) = (file_usage.map(|u| u.0), file_usage.map(|u| u.1));
    let packed = cache.as_ref().map(|c| c.stats().packed_bytes);
    println!(
        "SAMPLE create_ms={create_ms} first_run_ms={first_run_ms} during_run_ms={during} steady_run_ms={steady} commit_ms={} anon_peak_bytes={anon_peak} packed_bytes={} anon_bytes={} dirty_bytes={} file_rss_bytes={} file_dirty_bytes={}",
        commit_ms.map_or("null".into(), |v| format!("{v:.1}")),
        packed.map_or("null".into(), |p| p.to_string()),
        anon1.saturating_sub(anon0),
        dirty1.saturating_sub(dirty0),
        file_rss.map_or("null".into(), |p| p.to_string()),
        file_dirty.map_or("null".into(), |p| p.to_string()),
    );
    std::io::stdout().flush().ok();
    if hold {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).ok();
    }
    drop(rt);
    drop(keep);
    drop(cache);
    if !xnn_cache.is_null() {
        // SAFETY: XNNPACK's own cache, no runtime uses it any more.
        unsafe { x::xnn_delete_weights_cache(xnn_cache) };
    }
}

fn parse_sample(line: &str) -> Sample {
    let f: BTreeMap<&str, &str> = line.split(' ').filter_map(|kv| kv.split_once('=')).collect();
    let num = |k: &str| f[k].parse::<f64>().unwrap_or(0.0);
    let opt = |k: &str| f[k].parse::<u64>().ok();
    Sample {
        create_ms: num("create_ms"),
        first_run_ms: num("first_run_ms"),
        during_run_ms: num("during_run_ms"),
        steady_run_ms: num("steady_run_ms"),
        commit_ms: f["commit_ms"].parse::<f64>().ok(),
        anon_peak_bytes: num("anon_peak_bytes") as u64,
        packed_bytes: opt("packed_bytes"),
        anon_bytes: num("anon_bytes") as u64,
        dirty_bytes: num("dirty_bytes") as u64,
        file_rss_bytes: opt("file_rss_bytes"),
        file_dirty_bytes: opt("file_dirty_bytes"),
    }
}

struct Args {
    models: Vec<String>,
    strategies: Vec<String>,
    scale: f64,
    runs: usize,
    json: bool,
    dir: PathBuf,
}

fn spawn(args: &Args, model: &str, strategy: &str, hold: bool) -> Child {
    let exe = std::env::current_exe().expect("the benchmark's own path");
    let mut cmd = Command::new(exe);
    cmd.args(["--child", model, strategy, "--scale", &args.scale.to_string(), "--dir"]).arg(&args.dir);
    if hold {
        cmd.arg("--hold");
    }
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::inherit());
    cmd.spawn().expect("spawn a child process")
}

fn read_sample(child: &mut Child) -> Sample {
    let out = child.stdout.as_mut().expect("piped");
    let mut reader = BufReader::new(out);
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            panic!("a child exited without a sample: {:?}", child.wait());
        }
        if let Some(s) = line.trim_end().strip_prefix("SAMPLE ") {
            return parse_sample(s);
        }
    }
}

fn run_one(args: &Args, model: &str, strategy: &str) -> Sample {
    // Start every run with no dirty data in flight: earlier runs' write-back
    // would otherwise land in this run's timings.
    // SAFETY: sync has no arguments.
    unsafe { libc::sync() };
    let mut child = spawn(args, model, strategy, false);
    let s = read_sample(&mut child);
    let status = child.wait().expect("wait");
    assert!(status.success(), "{model}/{strategy}: {status}");
    s
}

fn cache_path(dir: &Path, model: &str) -> PathBuf {
    dir.join(format!("{model}.xnncache"))
}

fn remove_cache(dir: &Path, model: &str) {
    let p = cache_path(dir, model);
    let _ = std::fs::remove_file(&p);
    let _ = std::fs::remove_file(p.with_extension("xnncache.lock"));
}

/// Time to write and `fdatasync` `bytes` to a new file in `dir`: the floor
/// for making that many bytes clean file pages.
fn writeback_ms(dir: &Path, bytes: u64) -> f64 {
    let path = dir.join("writeback.tmp");
    let chunk = vec![0x5Au8; 1 << 20];
    let t = Instant::now();
    {
        let mut f = std::fs::File::create(&path).expect("create the writeback file");
        let mut left = bytes;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            f.write_all(&chunk[..n]).expect("write");
            left -= n as u64;
        }
        f.sync_data().expect("fdatasync");
    }
    let elapsed = ms(t);
    let _ = std::fs::remove_file(&path);
    elapsed
}

/// Four warm processes at once: the total PSS of their cache-file mappings.
fn pss_of_four(args: &Args, model: &str) -> u64 {
    let mut children: Vec<Child> = (0..4).map(|_| spawn(args, model, "warm", true)).collect();
    for c in children.iter_mut() {
        read_sample(c); // each is ready, runtime alive, and waits on stdin
    }
    let file = cache_path(&args.dir, model);
    let total = children.iter().map(|c| mapping_usage(&format!("/proc/{}/smaps", c.id()), &file).pss).sum();
    for mut c in children {
        let _ = c.stdin.take().map(|mut i| i.write_all(b"go\n"));
        let _ = c.wait();
    }
    total
}

#[derive(Default)]
struct Summary {
    samples: Vec<Sample>,
}

fn median_min_max(v: &mut [f64]) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

impl Summary {
    fn med(&self, f: impl Fn(&Sample) -> f64) -> (f64, f64, f64) {
        let mut v: Vec<f64> = self.samples.iter().map(f).collect();
        median_min_max(&mut v)
    }
    /// The median over the samples that measured it, if any did.
    fn med_of(&self, f: impl Fn(&Sample) -> Option<f64>) -> Option<f64> {
        let mut v: Vec<f64> = self.samples.iter().filter_map(f).collect();
        (!v.is_empty()).then(|| median_min_max(&mut v).0)
    }
    fn med_opt(&self, f: impl Fn(&Sample) -> Option<u64>) -> Option<u64> {
        self.med_of(|s| f(s).map(|x| x as f64)).map(|m| m as u64)
    }
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1 << 20) as f64)
}

fn parse_args() -> Args {
    let argv: Vec<String> = std::env::args().collect();
    let get = |name: &str| argv.iter().position(|a| a == name).and_then(|i| argv.get(i + 1)).cloned();
    let list = |v: Option<String>, all: &[&str]| -> Vec<String> {
        v.map_or_else(|| all.iter().map(|s| s.to_string()).collect(), |s| s.split(',').map(String::from).collect())
    };
    let args = Args {
        models: list(get("--model"), &models::NAMES),
        strategies: list(get("--strategy"), &STRATEGIES),
        scale: get("--scale").and_then(|s| s.parse().ok()).unwrap_or(1.0),
        runs: get("--runs").and_then(|s| s.parse().ok()).unwrap_or(5).max(1),
        json: argv.iter().any(|a| a == "--json"),
        dir: get("--dir").map(PathBuf::from).unwrap_or_else(|| std::env::temp_dir().join("xnncache-bench")),
    };
    for m in &args.models {
        if models::by_name(m).is_none() {
            eprintln!("unknown model {m}; known: {}", models::NAMES.join(", "));
            std::process::exit(2);
        }
    }
    for s in &args.strategies {
        if !STRATEGIES.contains(&s.as_str()) {
            eprintln!("unknown strategy {s}; known: {}", STRATEGIES.join(", "));
            std::process::exit(2);
        }
    }
    args
}

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    let args = parse_args();
    models::set_scale(args.scale);
    std::fs::create_dir_all(&args.dir).expect("create the benchmark folder");
    if let Some(i) = argv.iter().position(|a| a == "--child") {
        let (model, strategy) = (&argv[i + 1], &argv[i + 2]);
        let m = models::by_name(model).expect("known model");
        child(&m, strategy, &cache_path(&args.dir, model), argv.iter().any(|a| a == "--hold"));
        return;
    }

    let total = args.models.len() * args.strategies.len() * args.runs;
    let mut done = 0;
    for model in &args.models {
        let mut rows: BTreeMap<&str, Summary> = BTreeMap::new();
        let m = models::by_name(model).expect("checked");
        let weights = m.constant_bytes();
        drop(m);
        // The warm strategies need a file built by this invocation: one left
        // by an earlier run (another --scale, another build) would not match.
        let mut built: Option<Sample> = None;
        for strategy in STRATEGIES.iter().filter(|s| args.strategies.iter().any(|x| x == *s)) {
            let needs_file = matches!(*strategy, "warm" | "warm-evicted" | "warm-verify");
            if needs_file && built.is_none() {
                eprintln!("  {model}: building the cache file for {strategy}");
                remove_cache(&args.dir, model);
                built = Some(run_one(&args, model, "cold"));
            }
            for r in 0..args.runs {
                done += 1;
                eprintln!("[{done}/{total}] {model} {strategy} run {}/{}", r + 1, args.runs);
                if *strategy == "cold" {
                    remove_cache(&args.dir, model);
                }
                let s = run_one(&args, model, strategy);
                if *strategy == "cold" {
                    built = Some(s.clone());
                }
                rows.entry(strategy).or_default().samples.push(s);
            }
        }
        let packed = ["memory", "cold", "floor"]
            .iter()
            .find_map(|s| rows.get(s).and_then(|r| r.med_opt(|x| x.packed_bytes)))
            .or(built.and_then(|b| b.packed_bytes))
            .unwrap_or(0);
        // Packing everything is what `none` and `xnnpack` do; their packed bytes are the model's.
        for s in ["none", "xnnpack"] {
            if let Some(r) = rows.get_mut(s) {
                r.samples.iter_mut().for_each(|x| x.packed_bytes = (packed > 0).then_some(packed));
            }
        }
        let wb = {
            let mut v: Vec<f64> = (0..args.runs).map(|_| writeback_ms(&args.dir, packed)).collect();
            median_min_max(&mut v)
        };
        let pss = args.strategies.iter().any(|s| s == "warm").then(|| {
            eprintln!("  {model}: four warm processes at once");
            pss_of_four(&args, model)
        });
        report(&args, model, weights, packed, &rows, wb, pss);
    }
}

fn report(args: &Args, model: &str, weights: usize, packed: u64, rows: &BTreeMap<&str, Summary>, wb: (f64, f64, f64), pss: Option<u64>) {
    let get = |s: &str| rows.get(s);
    let create = |s: &str| get(s).map(|r| r.med(|x| x.create_ms).0);
    let steady = |s: &str| get(s).map(|r| r.med(|x| x.steady_run_ms).0);
    let during = |s: &str| get(s).map(|r| r.med(|x| x.during_run_ms).0);
    let commit = get("cold").and_then(|r| r.med_of(|x| x.commit_ms));
    let ratio = |a: Option<f64>, b: Option<f64>| a.zip(b).map(|(a, b)| a / b.max(1e-6));
    let anon_ratio = |s: &str| get(s).map(|r| r.med(|x| x.anon_bytes as f64).0 / packed.max(1) as f64);
    // The largest dirty size of the cache file's mappings after finalize, over every run.
    let max_file_dirty = ["cold", "warm", "warm-evicted"]
        .iter()
        .filter_map(|s| get(s))
        .flat_map(|r| r.samples.iter().filter_map(|x| x.file_dirty_bytes))
        .max()
        .map(|v| v as f64);
    let ratios: Vec<(&str, Option<f64>, &str)> = vec![
        ("none_over_warm_create", ratio(create("none"), create("warm")), if model == "mlp-f32" { ">= 200" } else if model == "llm-q4" { ">= 40" } else { "(none)" }),
        ("warm_over_floor_create", ratio(create("warm"), create("floor")), "<= 1.25"),
        ("cold_over_none_create", ratio(create("cold"), create("none")), "<= 1.10"),
        ("cold_commit_over_none_plus_writeback", ratio(commit, create("none").map(|x| x + wb.0)), "<= 1.10"),
        ("memory_over_xnnpack_create", ratio(create("memory"), create("xnnpack")), "<= 1.05"),
        ("cold_during_writeback_over_none_steady", ratio(during("cold"), steady("none")), "<= 1.02"),
        ("cold_after_writeback_over_none_steady", ratio(steady("cold"), steady("none")), "<= 1.02"),
        ("warm_over_none_steady", ratio(steady("warm"), steady("none")), "<= 1.02"),
        ("cold_peak_anon_over_packed", get("cold").map(|r| r.med(|x| x.anon_peak_bytes as f64).0 / packed.max(1) as f64), "(report)"),
        ("cold_anon_over_packed", anon_ratio("cold"), "<= 0.01"),
        ("warm_anon_over_packed", anon_ratio("warm"), "<= 0.01"),
        ("none_anon_over_packed", anon_ratio("none"), "(near 1)"),
        ("cache_file_dirty_bytes_after_finalize", max_file_dirty, "== 0"),
        ("pss_of_4_warm_over_packed", pss.map(|p| p as f64 / packed.max(1) as f64), "<= 1.1"),
        // What XNNCACHE_FLAG_VERIFY adds to a warm launch, per GiB of packed weights.
        ("verify_ms_per_gib", create("warm-verify").zip(create("warm")).map(|(v, w)| (v - w) / (packed.max(1) as f64 / (1u64 << 30) as f64)), "(report)"),
    ];
    if args.json {
        for (s, r) in rows {
            let (c, ..) = r.med(|x| x.create_ms);
            let opt = |v: Option<u64>| v.map_or("null".to_string(), |v| v.to_string());
            println!(
                "{{\"xnnpack\":\"{}\",\"model\":\"{model}\",\"strategy\":\"{s}\",\"create_ms\":{c:.3},\"create_ms_min\":{:.3},\"create_ms_max\":{:.3},\"first_run_ms\":{:.3},\"during_run_ms\":{:.3},\"steady_run_ms\":{:.3},\"commit_ms\":{},\"packed_bytes\":{},\"anon_peak_bytes\":{},\"anon_bytes\":{},\"dirty_bytes\":{},\"file_rss_bytes\":{},\"pss_bytes\":{}}}",
                x::PIN,
                r.med(|x| x.create_ms).1,
                r.med(|x| x.create_ms).2,
                r.med(|x| x.first_run_ms).0,
                r.med(|x| x.during_run_ms).0,
                r.med(|x| x.steady_run_ms).0,
                r.med_of(|x| x.commit_ms).map_or("null".to_string(), |v| format!("{v:.1}")),
                opt(r.med_opt(|x| x.packed_bytes)),
                r.med(|x| x.anon_peak_bytes as f64).0 as u64,
                r.med(|x| x.anon_bytes as f64).0 as u64,
                r.med(|x| x.dirty_bytes as f64).0 as u64,
                opt(r.med_opt(|x| x.file_rss_bytes)),
                if *s == "warm" { opt(pss) } else { "null".into() },
            );
        }
        println!(
            "{{\"xnnpack\":\"{}\",\"model\":\"{model}\",\"strategy\":\"writeback\",\"create_ms\":{:.3},\"first_run_ms\":null,\"steady_run_ms\":null,\"packed_bytes\":{packed},\"anon_bytes\":null,\"dirty_bytes\":null,\"file_rss_bytes\":null,\"pss_bytes\":null}}",
            x::PIN,
            wb.0
        );
        let fields: Vec<String> = ratios.iter().map(|(k, v, _)| format!("\"{k}\":{}", v.map_or("null".into(), |v| format!("{v:.4}")))).collect();
        println!("{{\"xnnpack\":\"{}\",\"model\":\"{model}\",\"ratios\":{{{}}}}}", x::PIN, fields.join(","));
        return;
    }
    println!();
    println!(
        "== {model} on XNNPACK {}: {:.1} M constant bytes, {} packed (scale {}, {} runs each; median [min-max])",
        x::PIN,
        weights as f64 / 1e6,
        mib(packed),
        args.scale,
        args.runs
    );
    println!(
        "{:<13} {:>28} {:>10} {:>10} {:>10} {:>10} {:>11} {:>11} {:>11} {:>9} {:>11} {:>11}",
        "strategy", "create_ms", "commit_ms", "first_ms", "during_ms", "steady_ms", "packed", "peak_anon", "anon", "dirty", "file_rss", "pss(4)"
    );
    for s in STRATEGIES {
        let Some(r) = rows.get(s) else { continue };
        let (c, lo, hi) = r.med(|x| x.create_ms);
        let commit = r.med_of(|x| x.commit_ms);
        println!(
            "{:<13} {:>28} {:>10} {:>10.2} {:>10.2} {:>10.2} {:>11} {:>11} {:>11} {:>9} {:>11} {:>11}",
            s,
            format!("{c:.2} [{lo:.2}-{hi:.2}]"),
            commit.map_or("-".into(), |v| format!("{v:.1}")),
            r.med(|x| x.first_run_ms).0,
            r.med(|x| x.during_run_ms).0,
            r.med(|x| x.steady_run_ms).0,
            r.med_opt(|x| x.packed_bytes).map_or("-".into(), mib),
            mib(r.med(|x| x.anon_peak_bytes as f64).0 as u64),
            mib(r.med(|x| x.anon_bytes as f64).0 as u64),
            r.med(|x| x.dirty_bytes as f64).0 as u64,
            r.med_opt(|x| x.file_rss_bytes).map_or("-".into(), mib),
            if s == "warm" { pss.map_or("-".into(), mib) } else { "-".into() },
        );
    }
    println!("{:<13} {:>28}", "writeback", format!("{:.2} [{:.2}-{:.2}]", wb.0, wb.1, wb.2));
    println!("ratios ({model}):");
    for (k, v, target) in ratios {
        println!("  {k:<34} {:>12}   target {target:<9} {}", v.map_or("-".into(), |v| format!("{v:.3}")), verdict(v, target));
    }
}

/// "met" or "missed" for a value against a target such as "<= 1.10" (what
/// docs/BENCHMARKS.md's marks are copied from); "" for a target that only reports.
fn verdict(value: Option<f64>, target: &str) -> &'static str {
    let (Some(v), Some((op, bound))) = (value, target.split_once(' ')) else { return "" };
    let Ok(bound) = bound.parse::<f64>() else { return "" };
    let met = match op {
        "<=" => v <= bound,
        ">=" => v >= bound,
        "==" => v == bound,
        _ => return "",
    };
    if met {
        "met"
    } else {
        "missed"
    }
}
