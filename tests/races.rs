//! Reliability battery, races (issue 12):
//!
//! - four processes at a time open, build, finalize and compact one path,
//!   round after round, some killed at a random moment; between rounds the
//!   file is sometimes deleted, damaged (header or index bytes), truncated or
//!   given junk. Every launch compares its outputs with a runtime without a
//!   cache;
//! - eight threads create and run runtimes over one cache file, through
//!   several lifetimes of the cache (cold, warm, after a compaction).
//!
//! Smoke size in `cargo test`; full size (8 series of 4 processes × 25
//! rounds; 20 lifetimes) with `XNNCACHE_BATTERY=full`.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Barrier;
use std::time::Duration;

use xnncache_tests::battery::{below, chance, report, seed, size};
use xnncache_tests::launch::{random_models, POOL, temporaries, Ended, Spec};
use xnncache_tests::models::*;
use xnncache_tests::{Cache, Rng, TempDir};

#[test]
#[ignore = "a launch, run in a child process by the tests of this file"]
fn child_launch() {
    xnncache_tests::launch::child_launch();
}

const REUSED: u64 = xnncache::store::FileState::XNNCACHE_FILE_REUSED as u64;


fn random_flags(rng: &mut Rng) -> String {
    let mut flags = Vec::new();
    for (flag, percent) in [("compact", 20), ("verify", 15), ("bycontent", 20), ("sync", 20)] {
        if chance(rng, percent) {
            flags.push(flag);
        }
    }
    flags.join(",")
}

/// Damages the file between rounds; returns what it did.
fn damage(path: &Path, rng: &mut Rng) -> Option<&'static str> {
    let mut bytes = std::fs::read(path).ok()?;
    let roll = below(rng, 100);
    let what = if roll < 10 {
        std::fs::remove_file(path).unwrap();
        if chance(rng, 30) {
            let mut lock = path.as_os_str().to_owned();
            lock.push(".lock");
            let _ = std::fs::remove_file(lock);
        }
        return Some("deleted");
    } else if roll < 25 && bytes.len() >= 2304 {
        // Header or index bytes: a refusal, a fall-back to the older commit,
        // or a rebuild; never payload bytes (default mode does not checksum
        // those at open: see the corruption series).
        let slot = |i: usize| &bytes[xnncache::format::SLOT_OFFSETS[i] as usize..][..xnncache::format::HEADER_SIZE];
        let index = xnncache::format::pick_header([slot(0), slot(1)], bytes.len() as u64)
            .ok()
            .map(|(_, h)| h.index_offset as usize..(h.index_offset + h.index_size) as usize);
        for _ in 0..1 + below(rng, 8) {
            let off = match (&index, chance(rng, 50)) {
                (Some(r), true) => r.start + below(rng, r.len() as u64) as usize,
                _ => xnncache::format::SLOT_OFFSETS[below(rng, 2) as usize] as usize + below(rng, 256) as usize,
            };
            bytes[off] ^= 1 << below(rng, 8);
        }
        "damaged header or index"
    } else if roll < 30 {
        bytes.truncate(below(rng, bytes.len() as u64) as usize);
        "truncated"
    } else if roll < 35 {
        let n = 1 + below(rng, 50_000) as usize;
        bytes.extend(rng.bytes(n));
        "junk appended"
    } else {
        return None;
    };
    std::fs::write(path, bytes).unwrap();
    Some(what)
}

#[test]
fn four_processes_on_one_path_through_kills_deletes_and_damage() {
    let series = size("race_series", 1, 8);
    let rounds = size("race_rounds", 4, 25);
    const PROCS: usize = 4;
    let mut rng = Rng::new(seed() ^ 0x4ace);
    let (mut launches, mut kills, mut finished, mut wrong, mut compactions, mut rebuilds) = (0u64, 0u64, 0u64, 0u64, 0u64, 0u64);
    let mut between: std::collections::BTreeMap<&str, u64> = Default::default();
    let mut crashes = Vec::new();
    let mut max_temporaries = 0;
    let mut span_us = 30_000u64;
    for s in 0..series {
        let dir = TempDir::new(&format!("battery-races-{s}"));
        let path = dir.file("shared.xnncache");
        for _ in 0..rounds {
            let plans: Vec<(String, String, Option<Duration>)> = (0..PROCS)
                .map(|_| {
                    let kill = chance(&mut rng, 20).then(|| Duration::from_micros(below(&mut rng, span_us)));
                    (random_models(&mut rng), random_flags(&mut rng), kill)
                })
                .collect();
            let ended: Vec<Ended> = std::thread::scope(|sc| {
                let handles: Vec<_> = plans
                    .iter()
                    .map(|(models, flags, kill)| {
                        let path = &path;
                        sc.spawn(move || {
                            let running = Spec { path, models, flags, env: Vec::new() }.start();
                            match kill {
                                Some(d) => running.kill_after(*d),
                                None => running.wait(),
                            }
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            for (e, (models, flags, _)) in ended.into_iter().zip(&plans) {
                launches += 1;
                match e {
                    Ended::Killed => kills += 1,
                    Ended::Done(l) => {
                        finished += 1;
                        wrong += l.get("wrong");
                        if flags.contains("compact") && l.get("compact") == 0 {
                            compactions += 1;
                        }
                        if l.get("file_state") != REUSED && l.get("file_state") != xnncache::store::FileState::XNNCACHE_FILE_NEW as u64 {
                            rebuilds += 1;
                        }
                        span_us = ((3 * span_us + l.get("build_us")) / 4).max(1000);
                    }
                    Ended::Crashed(m) => crashes.push(format!("{models} [{flags}]: {m}")),
                }
            }
            max_temporaries = max_temporaries.max(temporaries(&path).len());
            if let Some(what) = damage(&path, &mut rng) {
                *between.entry(what).or_insert(0) += 1;
            }
        }
        // After the series: one launch of everything (it may rebuild), then
        // another, which must find every weight in a valid file.
        let all = POOL.join(",");
        for (i, flags) in ["verify", "verify"].iter().enumerate() {
            match (Spec { path: &path, models: &all, flags, env: Vec::new() }).run() {
                Ended::Done(l) => {
                    wrong += l.get("wrong");
                    if i == 1 {
                        assert_eq!(l.get("file_state"), REUSED, "series {s}: the file is not valid after the races: {}", l.warning());
                    }
                }
                other => crashes.push(format!("series {s}: final launch: {other:?}")),
            }
        }
    }
    report(
        "races_processes",
        vec![
            ("series", series.into()),
            ("rounds", rounds.into()),
            ("processes", PROCS.into()),
            ("launches", launches.into()),
            ("kills", kills.into()),
            ("finished", finished.into()),
            ("compactions", compactions.into()),
            ("rebuilds_seen", rebuilds.into()),
            ("deleted", between.get("deleted").copied().unwrap_or(0).into()),
            ("damaged", between.get("damaged header or index").copied().unwrap_or(0).into()),
            ("truncated", between.get("truncated").copied().unwrap_or(0).into()),
            ("junk_appended", between.get("junk appended").copied().unwrap_or(0).into()),
            ("wrong_outputs", wrong.into()),
            ("crashes", crashes.len().into()),
            ("max_temporaries", max_temporaries.into()),
            ("seed", seed().into()),
        ],
    );
    assert!(crashes.is_empty(), "{} crashes, the first: {}", crashes.len(), crashes[0]);
    assert_eq!(wrong, 0);
    assert!(finished > 0);
}

#[test]
fn eight_threads_over_one_file_through_several_lifetimes() {
    const THREADS: usize = 8;
    let lifetimes = size("thread_lifetimes", 3, 20);
    let rounds = size("thread_rounds", 3, 8) as usize;
    let models = [mixed(), fc_qd8_qc4w(), conv2d(), deconv2d(), fc_f32_bias(), fc_qs8(), shared_a(), shared_b()];
    let expected: Vec<_> = models.iter().map(|m| m.run(std::ptr::null_mut())).collect();
    let dir = TempDir::new("battery-threads");
    let path = dir.file("cache.xnncache");
    let (wrong, failed, runtimes) = (AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0));
    let mut states = Vec::new();
    let mut rng = Rng::new(seed() ^ 0x7ead);
    for life in 0..lifetimes {
        let cache = Cache::open(Some(&path));
        states.push(cache.stats().file_state);
        // Half the lifetimes register by name, the others by content.
        let by_name = life % 2 == 0;
        for m in &models {
            m.register(&cache, by_name);
        }
        let offset = below(&mut rng, models.len() as u64) as usize;
        let start = Barrier::new(THREADS);
        std::thread::scope(|s| {
            for t in 0..THREADS {
                let (models, expected, cache, start, wrong, failed, runtimes) = (&models, &expected, &cache, &start, &wrong, &failed, &runtimes);
                s.spawn(move || {
                    start.wait();
                    let m0 = (t + offset) % models.len();
                    let Ok(mut early) = models[m0].create(cache.provider()) else {
                        failed.fetch_add(1, Ordering::Relaxed);
                        return;
                    };
                    for round in 0..rounds {
                        let m = (t + offset + round * 3) % models.len();
                        runtimes.fetch_add(1, Ordering::Relaxed);
                        match models[m].create(cache.provider()).map(|mut rt| (rt.infer(), rt)) {
                            Ok((Ok(out), mut rt)) => {
                                if out != expected[m] {
                                    wrong.fetch_add(1, Ordering::Relaxed);
                                }
                                if (t + round) % 3 == 0 {
                                    xnncache::capi::xnncache_finalize(cache.0);
                                }
                                if rt.infer().ok().as_ref() != Some(&expected[m]) {
                                    wrong.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                            _ => {
                                failed.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        if early.infer().ok().as_ref() != Some(&expected[m0]) {
                            wrong.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        cache.finalize();
        if life % 3 == 2 {
            assert_eq!(xnncache::capi::xnncache_compact(cache.0), xnncache::Status::XNNCACHE_OK);
        }
        for (m, e) in models.iter().zip(&expected) {
            if &m.run(cache.provider()) != e {
                wrong.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    let reused = states.iter().filter(|&&s| s as u64 == REUSED).count();
    report(
        "races_threads",
        vec![
            ("threads", THREADS.into()),
            ("lifetimes", lifetimes.into()),
            ("runtimes", runtimes.load(Ordering::Relaxed).into()),
            ("lifetimes_reusing_the_file", reused.into()),
            ("wrong_outputs", wrong.load(Ordering::Relaxed).into()),
            ("failed_creations", failed.load(Ordering::Relaxed).into()),
        ],
    );
    assert_eq!(wrong.load(Ordering::Relaxed), 0);
    assert_eq!(failed.load(Ordering::Relaxed), 0);
    assert_eq!(reused as u64, lifetimes - 1, "every lifetime after the first reuses the file: {states:?}");
}
