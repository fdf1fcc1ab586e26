//! Launches in child processes for the reliability battery (`tests/kills.rs`,
//! `tests/races.rs`, `tests/bigfiles.rs`): a launch is the test binary run
//! again on its `#[ignore]`d `child_launch` test, which calls
//! [`child_launch`]. It opens the cache at `T_PATH`, registers the models of
//! `T_MODELS`, runs each through the cache, compares the outputs with a
//! runtime without a cache (computed first, in the same process), finalizes,
//! optionally compacts, closes, and prints one `RESULT` line.
//!
//! Unlike `tests/persistence.rs`'s launches, a launch here does not panic on
//! wrong outputs: it counts them (`wrong=`), so that a series can report how
//! many there were. It also prints `BUILD_START` (flushed) just before it
//! opens the cache, so that a parent can kill it at a random moment of the
//! build rather than during its start-up.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::models::by_name;
use crate::{last_error, options, Cache};

/// Flags a launch understands (comma-separated in `T_FLAGS`).
pub const FLAGS: &[&str] = &["readonly", "verify", "bycontent", "compact", "sync"];

/// The body of a launch; configured by environment (see the module's doc).
pub fn child_launch() {
    let env = |k: &str| std::env::var(k).unwrap_or_default();
    let path = env("T_PATH");
    let flags: Vec<String> = env("T_FLAGS").split(',').filter(|s| !s.is_empty()).map(String::from).collect();
    let has = |f: &str| flags.iter().any(|x| x == f);
    let models: Vec<_> = env("T_MODELS").split(',').map(|m| (m.to_string(), by_name(m))).collect();
    let expected: Vec<_> = models.iter().map(|(_, m)| m.run(std::ptr::null_mut())).collect();

    let c_path = std::ffi::CString::new(path).unwrap();
    let mut o = options(Some(&c_path));
    if has("readonly") {
        o.flags |= xnncache::capi::XNNCACHE_FLAG_READ_ONLY;
    }
    if has("verify") {
        o.flags |= xnncache::capi::XNNCACHE_FLAG_VERIFY;
    }
    if has("sync") {
        o.flags |= xnncache::capi::XNNCACHE_FLAG_SYNC_WRITEBACK;
    }
    // The retention rule's inputs: a size cap, a program label.
    o.size_cap = env("T_SIZE_CAP").parse().unwrap_or(0);
    let label = std::ffi::CString::new(env("T_LABEL")).unwrap();
    if !label.as_bytes().is_empty() {
        o.program = label.as_ptr();
    }
    println!("BUILD_START");
    let _ = std::io::stdout().flush();
    let started = Instant::now();
    let cache = Cache::open_with(&o);
    let warning = last_error();
    for (_, m) in &models {
        m.register(&cache, !has("bycontent"));
    }
    let mut wrong = 0;
    let mut digest = 0u64;
    for ((_, m), want) in models.iter().zip(&expected) {
        let got = m.run(cache.provider());
        if &got != want {
            wrong += 1;
        }
        digest ^= got.digest();
    }
    let finalize = xnncache::capi::xnncache_finalize(cache.0);
    let wait = xnncache::capi::xnncache_wait(cache.0, u32::MAX);
    // Runtimes created after the finalize, on the sealed (file-backed) pages.
    for ((_, m), want) in models.iter().zip(&expected) {
        if &m.run(cache.provider()) != want {
            wrong += 1;
        }
    }
    let compact = if has("compact") { xnncache::capi::xnncache_compact(cache.0) as i32 } else { 0 };
    let s = cache.stats();
    drop(cache);
    println!(
        "RESULT wrong={wrong} entries={} loaded={} hits={} not_persisted={} commits={} file_state={} finalize={} wait={} compact={compact} digest={digest} build_us={} points={} writer_locks={} lock_files={} folder_listings={} folded={} packed={} stored={} dropped={} dropped_entries={} drop_point={} warning={}",
        s.entries,
        s.loaded_entries,
        s.hits,
        s.not_persisted,
        s.commits,
        s.file_state,
        finalize as i32,
        wait as i32,
        started.elapsed().as_micros(),
        xnncache::fault::passed(),
        xnncache::fault::counted("writer lock taken"),
        xnncache::fault::counted("lock file opened"),
        xnncache::fault::counted("folder listed"),
        s.duplicates_folded,
        s.packed_bytes,
        s.stored_bytes,
        s.dropped_bytes,
        s.dropped_entries,
        xnncache::fault::first_passed("drop: an index without the dropped entries staged").unwrap_or(0),
        warning.replace(' ', "_"),
    );
}

/// What a launch reported on its `RESULT` line.
#[derive(Debug, Clone)]
pub struct Launch {
    pub fields: HashMap<String, String>,
}

impl Launch {
    pub fn get(&self, k: &str) -> u64 {
        self.fields.get(k).unwrap_or_else(|| panic!("no {k} in {:?}", self.fields)).parse().unwrap()
    }
    pub fn warning(&self) -> &str {
        self.fields.get("warning").map_or("", String::as_str)
    }
    fn parse(stdout: &str) -> Option<Launch> {
        // libtest prints "test child_launch ... " on the same line first.
        let line = stdout.lines().find_map(|l| l.split_once("RESULT ").map(|(_, r)| r))?;
        Some(Launch { fields: line.split(' ').filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect() })
    }
}

/// How a launch ended.
#[derive(Debug)]
pub enum Ended {
    /// It ran to the end and reported.
    Done(Launch),
    /// Killed by us with SIGKILL.
    Killed,
    /// Anything else: a signal we did not send, a panic, no report. A crash.
    Crashed(String),
}

/// A launch of `models` on `path` with `flags`, run in a child of the
/// current test binary (whose `child_launch` test calls [`child_launch`]).
pub struct Spec<'a> {
    pub path: &'a Path,
    pub models: &'a str,
    pub flags: &'a str,
    pub env: Vec<(&'a str, String)>,
}

impl Spec<'_> {
    fn command(&self) -> Command {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args(["--exact", "child_launch", "--include-ignored", "--nocapture", "--test-threads=1"]);
        cmd.env("T_PATH", self.path).env("T_MODELS", self.models).env("T_FLAGS", self.flags);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).stdin(Stdio::null());
        cmd
    }

    /// Runs the launch to its end.
    pub fn run(&self) -> Ended {
        let out = self.command().output().expect("spawn the test binary");
        ended(out.status, &String::from_utf8_lossy(&out.stdout), &String::from_utf8_lossy(&out.stderr), false)
    }

    /// Starts the launch; [`Running::kill_after`] kills it `delay` after it
    /// said `BUILD_START`.
    pub fn start(&self) -> Running {
        let mut child = self.command().spawn().expect("spawn the test binary");
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        // Drain stderr on a thread so that the child never blocks on a full pipe.
        let err = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut BufReader::new(stderr), &mut s);
            s
        });
        Running { child, stdout: BufReader::new(stdout), err: Some(err), seen: String::new() }
    }
}

/// A launch started by [`Spec::start`].
pub struct Running {
    child: Child,
    stdout: BufReader<std::process::ChildStdout>,
    err: Option<std::thread::JoinHandle<String>>,
    seen: String,
}

impl Running {
    /// Waits for `BUILD_START`, then waits `delay` and sends SIGKILL (if the
    /// launch is still running), then reaps it.
    pub fn kill_after(mut self, delay: Duration) -> Ended {
        let mut line = String::new();
        loop {
            line.clear();
            match self.stdout.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    self.seen.push_str(&line);
                    if line.contains("BUILD_START") {
                        // The moment of the kill is the experiment's variable,
                        // not a synchronisation: whatever the launch is doing
                        // then, the next one must cope.
                        std::thread::sleep(delay);
                        // SAFETY: kill(2) on our own, not yet reaped, child.
                        unsafe { libc::kill(self.child.id() as i32, libc::SIGKILL) };
                        break;
                    }
                }
            }
        }
        self.finish(true)
    }

    /// Waits for the launch to end by itself.
    pub fn wait(self) -> Ended {
        self.finish(false)
    }

    fn finish(mut self, killed: bool) -> Ended {
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut self.stdout, &mut rest);
        self.seen.push_str(&rest);
        let status = self.child.wait().expect("wait for the child");
        let err = self.err.take().map(|h| h.join().unwrap_or_default()).unwrap_or_default();
        ended(status, &self.seen, &err, killed)
    }
}

fn ended(status: std::process::ExitStatus, stdout: &str, stderr: &str, we_killed: bool) -> Ended {
    // A launch with XNNCACHE_CRASH_AT kills itself at that crash point.
    let we_killed = we_killed || stdout.contains("crash point") || stderr.contains("xnncache: crash point");
    use std::os::unix::process::ExitStatusExt;
    match (status.signal(), Launch::parse(stdout)) {
        (Some(libc::SIGKILL), _) if we_killed => Ended::Killed,
        (None, Some(l)) if status.success() => Ended::Done(l),
        _ => Ended::Crashed(format!("{status:?}\n{stdout}\n{stderr}")),
    }
}

/// The temporaries (`.<name>.<pid>.<n>.tmp`) left beside `path`.
pub fn temporaries(path: &Path) -> Vec<std::path::PathBuf> {
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    let prefix = format!(".{name}.");
    std::fs::read_dir(path.parent().unwrap())
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(&prefix) && n.to_string_lossy().ends_with(".tmp")))
                .collect()
        })
        .unwrap_or_default()
}

/// Every model a launch can run (names for `by_name`).
pub const POOL: &[&str] = &["fc_f32", "qc8", "qc4", "qs8", "conv", "deconv", "depthwise", "mixed", "shared_a", "shared_b", "large"];

/// One to three distinct models of [`POOL`], for a launch's `T_MODELS`.
pub fn random_models(rng: &mut crate::Rng) -> String {
    let n = 1 + crate::battery::below(rng, 3) as usize;
    let mut picked: Vec<&str> = Vec::new();
    while picked.len() < n {
        let m = POOL[crate::battery::below(rng, POOL.len() as u64) as usize];
        if !picked.contains(&m) {
            picked.push(m);
        }
    }
    picked.join(",")
}
