//! Reliability battery, corruption (issue 12): a valid cache file with two
//! commits (both header slots and two indexes in use) is damaged in every
//! way below, and each damaged file is opened twice (as the damage left it,
//! then in verify mode) in a child process that runs the models through the
//! cache and compares their outputs with a runtime without a cache. A child
//! that crashes is counted (and restarted after the case that crashed it),
//! never fatal to the series.
//!
//! - every single-byte flip of both header slots and both indexes;
//! - truncation at every length up to the end of the newest commit;
//! - random multi-byte damage anywhere, and within header and index only;
//! - junk appended; a zeroed 4 KiB page (every page of the file);
//! - a flipped payload byte with `XNNCACHE_FLAG_VERIFY` (must be detected).
//!
//! `tests/persistence.rs` (`every_flipped_header_or_index_byte_and_every_truncation_is_refused`)
//! checks the single-commit file's flips in process; this series adds the
//! second commit, the other kinds of damage, the outputs and the figures.
//! Smoke size in `cargo test`; full size with `XNNCACHE_BATTERY=full`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use xnncache_tests::battery::{below, full, report, seed, size};
use xnncache_tests::launch::{Ended, Spec};
use xnncache_tests::models::by_name;
use xnncache_tests::{options, Cache, Rng, TempDir};

const REUSED: u64 = xnncache::store::FileState::XNNCACHE_FILE_REUSED as u64;
const CORRUPT: u64 = xnncache::store::FileState::XNNCACHE_FILE_REBUILT_CORRUPT as u64;

/// The models of the damaged file: commit 1 holds the first two, commit 2 adds the third.
const FIRST: &str = "fc_f32,qc4";
const MODELS: &str = "fc_f32,qc4,qc8";

#[test]
#[ignore = "a launch, run in a child process by the tests of this file"]
fn child_launch() {
    xnncache_tests::launch::child_launch();
}

/// One damaged file, as a line of the cases file the child reads:
/// `<mode> set <off>:<val>,...` | `<mode> trunc <from> <to>` (every length
/// in `[from, to)`, opened only) | `<mode> junk <seed> <n>` | `<mode> zero <off> <len>`;
/// mode `d` (default) or `v` (verify).
#[derive(Clone)]
struct Case {
    kind: &'static str,
    line: String,
}

/// What the child saw for one case.
#[derive(Clone, Debug)]
enum Outcome {
    /// (state, wrong outputs) of the first and the second (verify) open.
    Opened { first: (u64, u64), second: (u64, u64) },
    /// A truncation sweep: lengths refused, accepted, wrong outputs among the accepted.
    Sweep { refused: u64, accepted: u64, wrong: u64, shortest_accepted: u64 },
    Crashed(String),
    Hung,
}

#[test]
#[ignore = "the damaged files of a series, run in a child process"]
fn child_cases() {
    let env = |k: &str| std::env::var(k).unwrap();
    let goods: Vec<Vec<u8>> = env("T_GOOD").split(',').map(|p| std::fs::read(p).unwrap()).collect();
    let cases = std::fs::read_to_string(env("T_CASES")).unwrap();
    let start: usize = env("T_START").parse().unwrap();
    let victim = PathBuf::from(env("T_VICTIM"));
    let models: Vec<_> = MODELS.split(',').map(by_name).collect();
    let expected: Vec<_> = models.iter().map(|m| m.run(std::ptr::null_mut())).collect();
    let c_victim = std::ffi::CString::new(victim.to_str().unwrap()).unwrap();
    let session = |flags: u32, run: bool| -> (u64, u64) {
        let mut o = options(Some(&c_victim));
        o.flags = flags;
        let cache = Cache::open_with(&o);
        let state = cache.stats().file_state as u64;
        let mut wrong = 0;
        if run {
            for m in &models {
                m.register(&cache, true);
            }
            for (m, want) in models.iter().zip(&expected) {
                if &m.run(cache.provider()) != want {
                    wrong += 1;
                }
            }
            // A commit that cannot be made is not this test's concern; the
            // runtimes after it must still be right.
            xnncache::capi::xnncache_finalize(cache.0);
            xnncache::capi::xnncache_wait(cache.0, u32::MAX);
            for (m, want) in models.iter().zip(&expected) {
                if &m.run(cache.provider()) != want {
                    wrong += 1;
                }
            }
        }
        (state, wrong)
    };
    let verify = xnncache::capi::XNNCACHE_FLAG_VERIFY;
    let mut out = std::io::stdout();
    for (i, line) in cases.lines().enumerate().skip(start) {
        writeln!(out, "CASE {i}").unwrap();
        out.flush().unwrap();
        let (g, line) = line.split_once(' ').unwrap();
        let good = &goods[g.parse::<usize>().unwrap()];
        let words: Vec<&str> = line.split(' ').collect();
        let flags = if words[0] == "v" { verify } else { 0 };
        let mut bytes = good.clone();
        match words[1] {
            "set" => {
                for pair in words[2].split(',') {
                    let (off, val) = pair.split_once(':').unwrap();
                    bytes[off.parse::<usize>().unwrap()] = val.parse().unwrap();
                }
            }
            "trunc" => {
                let (from, to): (u64, u64) = (words[2].parse().unwrap(), words[3].parse().unwrap());
                let step: u64 = words.get(4).map_or(1, |s| s.parse().unwrap());
                // Shorten one file step by step (longest first): no rewrite per length.
                std::fs::write(&victim, &good[..to as usize]).unwrap();
                let file = std::fs::OpenOptions::new().write(true).open(&victim).unwrap();
                let (mut refused, mut accepted, mut wrong, mut shortest) = (0, 0, 0, u64::MAX);
                let mut len = to;
                while len > from {
                    len -= step.min(len - from);
                    file.set_len(len).unwrap();
                    let (state, _) = session(flags, false);
                    if state == REUSED {
                        accepted += 1;
                        shortest = shortest.min(len);
                        wrong += session(flags, true).1;
                        // The session may have appended: back to the truncated bytes.
                        std::fs::write(&victim, &good[..len as usize]).unwrap();
                    } else {
                        refused += 1;
                    }
                }
                writeln!(out, "DONE {i} sweep {refused} {accepted} {wrong} {shortest}").unwrap();
                continue;
            }
            "junk" => {
                let mut rng = Rng::new(words[2].parse().unwrap());
                bytes.extend(rng.bytes(words[3].parse().unwrap()));
            }
            "zero" => {
                let (off, len): (usize, usize) = (words[2].parse().unwrap(), words[3].parse().unwrap());
                bytes[off..off + len].iter_mut().for_each(|b| *b = 0);
            }
            other => panic!("unknown case {other}"),
        }
        std::fs::write(&victim, &bytes).unwrap();
        let first = session(flags, true);
        let second = session(verify, true);
        writeln!(out, "DONE {i} {} {} {} {}", first.0, first.1, second.0, second.1).unwrap();
    }
}

/// Runs the cases in children, restarting after a case that crashed one.
fn run_cases(dir: &Path, goods: &[&Path], cases: &[Case]) -> Vec<Outcome> {
    let good = goods.iter().map(|p| p.to_str().unwrap()).collect::<Vec<_>>().join(",");
    let list = dir.join("cases.txt");
    std::fs::write(&list, cases.iter().map(|c| c.line.clone() + "\n").collect::<String>()).unwrap();
    let victim = shm_dir(dir).join("victim.xnncache");
    let mut outcomes: Vec<Option<Outcome>> = vec![None; cases.len()];
    let mut start = 0;
    while start < cases.len() {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "child_cases", "--include-ignored", "--nocapture", "--test-threads=1"])
            .env("T_GOOD", &good)
            .env("T_CASES", &list)
            .env("T_START", start.to_string())
            .env("T_VICTIM", &victim)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let err = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut BufReader::new(stderr), &mut s);
            s
        });
        let mut current = None;
        let mut hung = false;
        loop {
            // A case takes milliseconds (a sweep, seconds): minutes without a line is a hang.
            match rx.recv_timeout(Duration::from_secs(300)) {
                Ok(line) => {
                    let line = line.rsplit_once("CASE ").map(|(_, r)| format!("CASE {r}")).unwrap_or(line);
                    let words: Vec<&str> = line.split_whitespace().collect();
                    match words.as_slice() {
                        ["CASE", i] => current = Some(i.parse::<usize>().unwrap()),
                        ["DONE", i, "sweep", r, a, w, m] => {
                            let (r, a, w, m) = (r.parse().unwrap(), a.parse().unwrap(), w.parse().unwrap(), m.parse().unwrap());
                            outcomes[i.parse::<usize>().unwrap()] = Some(Outcome::Sweep { refused: r, accepted: a, wrong: w, shortest_accepted: m });
                            current = None;
                        }
                        ["DONE", i, s1, w1, s2, w2] => {
                            let p = |s: &str| s.parse::<u64>().unwrap();
                            outcomes[i.parse::<usize>().unwrap()] = Some(Outcome::Opened { first: (p(s1), p(w1)), second: (p(s2), p(w2)) });
                            current = None;
                        }
                        _ => {}
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    hung = true;
                    let _ = child.kill();
                    break;
                }
            }
        }
        let status = child.wait().unwrap();
        let err = err.join().unwrap_or_default();
        match current {
            Some(i) => {
                let tail = &err[err.len().saturating_sub(2000)..];
                outcomes[i] = Some(if hung { Outcome::Hung } else { Outcome::Crashed(format!("case {}: {status:?}\n{tail}", cases[i].line)) });
                start = i + 1;
            }
            None => {
                assert!(status.success() || hung, "the case runner failed between cases: {status:?}\n{err}");
                start = outcomes.iter().position(Option::is_none).unwrap_or(cases.len());
            }
        }
    }
    outcomes.into_iter().map(|o| o.expect("every case ran")).collect()
}

/// A folder in memory for the victims when there is one (their rebuilds sync).
fn shm_dir(fallback: &Path) -> PathBuf {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        let d = shm.join(format!("xnncache-battery-corruption-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    } else {
        fallback.to_path_buf()
    }
}

/// Figures of one kind of damage.
#[derive(Default, Debug)]
struct Figures {
    tried: u64,
    detected: u64,
    accepted_correct: u64,
    wrong: u64,
    second_open_wrong: u64,
    crashes: u64,
    hangs: u64,
}

/// A valid file and what a damaged copy of it must satisfy.
struct Good {
    path: PathBuf,
    bytes: Vec<u8>,
    newest: xnncache::format::Header,
    older: Option<xnncache::format::Header>,
    payloads: Vec<std::ops::Range<usize>>,
}

impl Good {
    fn build(path: PathBuf, launches: &[&str]) -> Good {
        for models in launches {
            match (Spec { path: &path, models, flags: "", env: Vec::new() }).run() {
                Ended::Done(l) => assert_eq!(l.get("wrong"), 0),
                other => panic!("building the file: {other:?}"),
            }
        }
        let bytes = std::fs::read(&path).unwrap();
        let len = bytes.len() as u64;
        let slot = |i: usize| &bytes[xnncache::format::SLOT_OFFSETS[i] as usize..][..xnncache::format::HEADER_SIZE];
        let (n, newest) = xnncache::format::pick_header([slot(0), slot(1)], len).unwrap();
        assert_eq!(newest.generation, launches.len() as u64, "one commit per launch");
        let older = xnncache::format::Header::decode(slot(1 - n), len).ok();
        let decoded = xnncache::format::Index::decode(&bytes[index(&newest)], &newest).unwrap();
        let payloads = decoded.payloads.iter().map(|p| p.offset as usize..(p.offset + p.size) as usize).collect();
        Good { path, bytes, newest, older, payloads }
    }
    fn in_payload(&self, off: usize) -> bool {
        self.payloads.iter().any(|r| r.contains(&off))
    }
    /// Every byte of both header slots and every index a valid slot names.
    fn meta(&self) -> Vec<usize> {
        (0..2)
            .flat_map(|i| (xnncache::format::SLOT_OFFSETS[i] as usize..).take(xnncache::format::HEADER_SIZE))
            .chain(index(&self.newest))
            .chain(self.older.iter().flat_map(index))
            .collect()
    }
}

fn index(h: &xnncache::format::Header) -> std::ops::Range<usize> {
    h.index_offset as usize..(h.index_offset + h.index_size) as usize
}

#[test]
fn damaged_files_are_refused_or_give_exact_outputs_and_never_crash() {
    let dir = TempDir::new("battery-corruption");
    // File 0: one commit (slot 1 empty); file 1: two commits (both slots, two indexes).
    let goods = [Good::build(dir.file("one.xnncache"), &[FIRST]), Good::build(dir.file("two.xnncache"), &[FIRST, "qc8"])];
    let mut rng = Rng::new(seed() ^ 0xc0de);
    let mut cases: Vec<Case> = Vec::new();
    let set = |cases: &mut Vec<Case>, g: usize, kind: &'static str, mode: &str, pairs: &[(usize, u8)]| {
        let list: Vec<String> = pairs.iter().map(|(o, v)| format!("{o}:{v}")).collect();
        cases.push(Case { kind, line: format!("{g} {mode} set {}", list.join(",")) });
    };
    for (g, good) in goods.iter().enumerate() {
        let len = good.bytes.len();
        let two = g == 1;
        // Every byte of both header slots and the indexes, one flip each
        // (at full size four flips each: low bit, 0x20, high bit, all bits).
        let xors: &[u8] = if full() { &[0x01, 0x20, 0x80, 0xff] } else { &[0x20] };
        let meta = good.meta();
        let stride = size("flip_stride", 5, 1) as usize;
        for (n, &off) in meta.iter().enumerate() {
            if n % stride == 0 {
                for &x in xors {
                    let kind = if two { "flip header/index byte, two commits" } else { "flip header/index byte, one commit" };
                    set(&mut cases, g, kind, "d", &[(off, good.bytes[off] ^ x)]);
                }
            }
        }
        // Truncation at every length below the end of the newest commit (a
        // sample of lengths at smoke size), in sweeps of 4096 lengths.
        let trunc_step = size("trunc_step", 1021, 1);
        let data_end = good.newest.data_end as usize;
        for from in (0..data_end).step_by(4096) {
            let to = (from + 4096).min(data_end);
            let kind = if two { "truncation, two commits" } else { "truncation, one commit" };
            cases.push(Case { kind, line: format!("{g} d trunc {from} {to} {trunc_step}") });
        }
        if !two {
            continue;
        }
        // Random damage: 1 to 16 random bytes anywhere (payloads included), in
        // default and in verify mode; and within header slots and indexes only.
        let multi = size("multi", 12, 1500);
        for n in 0..multi * 2 {
            let k = 1 + below(&mut rng, 16) as usize;
            let pairs: Vec<(usize, u8)> = (0..k).map(|_| (below(&mut rng, len as u64) as usize, rng.next_u64() as u8)).collect();
            let touches = pairs.iter().any(|&(o, v)| good.in_payload(o) && good.bytes[o] != v);
            let mode = if n % 2 == 0 { "d" } else { "v" };
            let kind = match (mode, touches) {
                ("d", true) => "random bytes, payload hit, default mode",
                ("d", false) => "random bytes, no payload hit, default mode",
                (_, true) => "random bytes, payload hit, verify mode",
                _ => "random bytes, no payload hit, verify mode",
            };
            set(&mut cases, g, kind, mode, &pairs);
        }
        for _ in 0..multi {
            let k = 1 + below(&mut rng, 16) as usize;
            let pairs: Vec<(usize, u8)> = (0..k).map(|_| (meta[below(&mut rng, meta.len() as u64) as usize], rng.next_u64() as u8)).collect();
            set(&mut cases, g, "random bytes in header/index", "d", &pairs);
        }
        // Junk appended after the newest commit.
        for _ in 0..size("junk", 4, 200) {
            cases.push(Case { kind: "junk appended", line: format!("{g} d junk {} {}", rng.next_u64(), 1 + below(&mut rng, 100_000)) });
        }
        // A zeroed 4 KiB page: every page of the file at full size.
        let pages = len.div_ceil(4096);
        let page_stride = size("page_stride", 23, 1) as usize;
        for p in (0..pages).step_by(page_stride) {
            let (off, n) = (p * 4096, 4096.min(len - p * 4096));
            let touches = (off..off + n).any(|o| good.in_payload(o) && good.bytes[o] != 0);
            let kind = if touches { "zeroed page, payload hit, verify mode" } else { "zeroed page, no payload hit" };
            cases.push(Case { kind, line: format!("{g} {} zero {off} {n}", if touches { "v" } else { "d" }) });
            if touches {
                cases.push(Case { kind: "zeroed page, payload hit, default mode", line: format!("{g} d zero {off} {n}") });
            }
        }
        // A flipped payload byte in verify mode: every 61st byte of every payload at full size.
        let payload_stride = size("payload_stride", 20011, 61) as usize;
        for r in &good.payloads {
            for off in r.clone().step_by(payload_stride) {
                set(&mut cases, g, "payload flip, verify mode", "v", &[(off, good.bytes[off] ^ 0x01)]);
            }
        }
    }
    let outcomes = run_cases(&dir.0, &[&goods[0].path, &goods[1].path], &cases);
    let _ = std::fs::remove_dir_all(shm_dir(&dir.0));

    let mut by_kind: BTreeMap<&str, Figures> = BTreeMap::new();
    let mut failures = Vec::new();
    for (case, outcome) in cases.iter().zip(&outcomes) {
        let f = by_kind.entry(case.kind).or_default();
        match outcome {
            Outcome::Opened { first, second } => {
                f.tried += 1;
                if first.0 != REUSED {
                    f.detected += 1;
                } else if first.1 == 0 {
                    f.accepted_correct += 1;
                }
                if first.1 > 0 {
                    f.wrong += 1;
                }
                if second.1 > 0 {
                    f.second_open_wrong += 1;
                }
                // A payload flip under verify, or any damage a verify open
                // then sees, must never reach the runtime.
                let verify_mode = case.line.split(' ').nth(1) == Some("v");
                if (verify_mode && first.1 > 0) || second.1 > 0 {
                    failures.push(format!("wrong outputs in verify mode: {} -> {outcome:?}", case.line));
                }
                if case.kind == "payload flip, verify mode" && first.0 != CORRUPT {
                    failures.push(format!("payload flip not detected by verify: {} -> {outcome:?}", case.line));
                }
                if !case.kind.contains("payload hit") && first.1 > 0 {
                    failures.push(format!("wrong outputs without payload damage: {} -> {outcome:?}", case.line));
                }
            }
            Outcome::Sweep { refused, accepted, wrong, shortest_accepted } => {
                f.tried += refused + accepted;
                f.detected += refused;
                f.accepted_correct += accepted - wrong.min(accepted);
                f.wrong += wrong;
                // Only the older commit may survive a cut, and only whole.
                let g: usize = case.line[..1].parse().unwrap();
                let floor = goods[g].older.as_ref().map_or(u64::MAX, |h| h.data_end);
                if *accepted > 0 && *shortest_accepted < floor {
                    failures.push(format!("a truncation below the end of every commit was accepted: {} -> {outcome:?}", case.line));
                }
                if *wrong > 0 {
                    failures.push(format!("wrong outputs after a truncation: {} -> {outcome:?}", case.line));
                }
            }
            Outcome::Crashed(m) => {
                f.tried += 1;
                f.crashes += 1;
                failures.push(format!("crash: {m}"));
            }
            Outcome::Hung => {
                f.tried += 1;
                f.hangs += 1;
                failures.push(format!("hang: {}", case.line));
            }
        }
    }
    let total = |g: fn(&Figures) -> u64| by_kind.values().map(g).sum::<u64>();
    let mut figures = vec![
        ("tried", total(|f| f.tried).into()),
        ("detected", total(|f| f.detected).into()),
        ("accepted_correct", total(|f| f.accepted_correct).into()),
        ("wrong", total(|f| f.wrong).into()),
        ("second_open_wrong", total(|f| f.second_open_wrong).into()),
        ("crashes", total(|f| f.crashes).into()),
        ("hangs", total(|f| f.hangs).into()),
        ("file_bytes", goods[1].bytes.len().into()),
        ("seed", seed().into()),
    ];
    let per_kind: Vec<String> = by_kind
        .iter()
        .map(|(k, f)| format!("{k}: tried {} detected {} accepted-correct {} wrong {} crashes {} hangs {}", f.tried, f.detected, f.accepted_correct, f.wrong, f.crashes, f.hangs))
        .collect();
    figures.push(("kinds", per_kind.join("; ").into()));
    report("corruption", figures);
    assert!(failures.is_empty(), "{} failures, the first ones:\n{}", failures.len(), failures.iter().take(10).cloned().collect::<Vec<_>>().join("\n"));
}
