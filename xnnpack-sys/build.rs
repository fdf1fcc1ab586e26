//! Builds XNNPACK for `xnnpack-sys` and generates its Rust bindings.
//!
//! Three ways to get XNNPACK, in order of preference:
//!
//! 1. `XNNPACK_LIB_DIR` + `XNNPACK_INCLUDE_DIR`: libraries the user already
//!    built. Nothing is built.
//! 2. `XNNPACK_SOURCE_DIR` (and optionally `CPUINFO_SOURCE_DIR`,
//!    `PTHREADPOOL_SOURCE_DIR`, `FXDIV_SOURCE_DIR`): the user's source tree,
//!    built with cmake + ninja and cached.
//! 3. Otherwise: a pinned XNNPACK chosen by `XNNCACHE_XNNPACK`, from source
//!    tarballs, sha256-checked, built with cmake + ninja and cached:
//!    - `4ea82e5` (default): Debian's snapshot (2024-11, provider ABI v1) and its
//!      three dependencies, from `XNNCACHE_DEPS_DIR` or downloaded from the
//!      Debian mirror apt is configured with;
//!    - `92a7ad5`: the XNNPACK ExecuTorch pins (2026-07, provider ABI v3), with
//!      cpuinfo 6882af5 and pthreadpool 0e6ca13. Debian does not carry these:
//!      they must be in `XNNCACHE_DEPS_DIR` (GitHub's archive tarballs of those
//!      commits, repacked as `.tar.xz`; the README lists names and sha256).
//!
//! Environment variables (each one is a rerun trigger):
//!
//! | variable | meaning |
//! |---|---|
//! | `XNNCACHE_XNNPACK` | which pinned XNNPACK to build: `4ea82e5` (default) or `92a7ad5` |
//! | `XNNCACHE_DEPS_DIR` | folder with the pin's source tarballs; used before downloading |
//! | `XNNCACHE_BUILD_CACHE` | cache root (default `$XDG_CACHE_HOME/xnncache`, then `$HOME/.cache/xnncache`) |
//! | `XNNCACHE_DEBIAN_MIRROR` | Debian mirror URL (ending in `/debian`) instead of apt's |
//! | `XNNPACK_SOURCE_DIR` | build this XNNPACK tree instead of the tarball |
//! | `CPUINFO_SOURCE_DIR`, `PTHREADPOOL_SOURCE_DIR`, `FXDIV_SOURCE_DIR` | the same for the dependencies |
//! | `XNNPACK_LIB_DIR` + `XNNPACK_INCLUDE_DIR` | use these built libraries and headers (`:`-separated list); build nothing |
//! | `XNNPACK_SYS_FETCH_ONLY` | only download and verify the tarballs (the crate is then empty) |
//! | `CC`, `CXX`, `CFLAGS`, `CXXFLAGS`, `ASMFLAGS`, `LDFLAGS`, `CMAKE_TOOLCHAIN_FILE` | seen by cmake; part of the cache key |
//! | `NUM_JOBS` | ninja's `-j` (cargo sets it; default: the number of cores) |
//!
//! The cache lives outside the work tree (`XNNCACHE_BUILD_CACHE`, else
//! `$XDG_CACHE_HOME/xnncache`, else `$HOME/.cache/xnncache`), keyed by a hash
//! of everything that changes the libraries, so `cargo clean`, a second clone
//! or a `--release` build all reuse one finished build:
//!
//! ```text
//! <cache>/lock                      flock(2)ed while a build runs
//! <cache>/downloads/<tarball>       verified downloads
//! <cache>/builds/<key>/             a finished build (appears by rename)
//!     manifest.txt                  written last: libraries, C++ runtime
//!     key.txt                       what the key was hashed from
//!     lib/lib*.a                    XNNPACK, microkernels-prod, pthreadpool, cpuinfo
//!     include/                      xnnpack.h, pthreadpool.h, ...
//!     logs/                         cmake and ninja output
//! <cache>/builds/<key>.tmp-<pid>/   a build in progress (sources, build tree)
//! ```

use std::collections::BTreeSet;
use std::env;
use std::fs;
use std::io::{self, Read};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, UNIX_EPOCH};

use sha2::{Digest, Sha256};

/// Part of every cache key: bump it when a change here changes what is built.
const SCRIPT_VERSION: &str = "xnnpack-sys build.rs 2";

/// Where to send people whose machine lacks a build tool.
const INSTALL_HINT: &str = "run scripts/install-deps.sh from the xnncache repository (it installs \
     cmake, ninja-build, python3, gcc, g++, libclang-dev, curl and xz-utils with apt-get), \
     or set XNNPACK_LIB_DIR and XNNPACK_INCLUDE_DIR to an XNNPACK you built yourself";

/// One source tarball (its sha256 is in `sources.txt`).
struct Tarball {
    package: &'static str,
    file: &'static str,
    /// Whether Debian's pool carries it (otherwise only `XNNCACHE_DEPS_DIR` does).
    debian: bool,
}

/// `sources.txt`: every tarball's name and sha256, written once for the
/// crate and the scripts.
const SOURCES: &str = include_str!("sources.txt");

impl Tarball {
    fn sha256(&self) -> &'static str {
        SOURCES
            .lines()
            .filter(|l| !l.starts_with('#'))
            .find_map(|l| l.split_once(' ').filter(|(f, _)| *f == self.file).map(|(_, s)| s.trim()))
            .unwrap_or_else(|| panic!("xnnpack-sys: {} is not in sources.txt", self.file))
    }
}

const XNNPACK: Tarball = Tarball {
    package: "xnnpack",
    file: "xnnpack_0.0~git20241108.4ea82e5.orig.tar.xz",
    debian: true,
};
const CPUINFO: Tarball = Tarball {
    package: "cpuinfo",
    file: "cpuinfo_0.0~git20250905.877328f.orig.tar.xz",
    debian: true,
};
const PTHREADPOOL: Tarball = Tarball {
    package: "pthreadpool",
    file: "pthreadpool_0.0~git20240616.560c60d.orig.tar.xz",
    debian: true,
};
const FXDIV: Tarball = Tarball {
    package: "fxdiv",
    file: "fxdiv_0.0~git20200417.b408327.orig.tar.xz",
    debian: true,
};

const XNNPACK_92A7AD5: Tarball = Tarball {
    package: "xnnpack",
    file: "xnnpack-92a7ad501b9516f9fecae119e0146dd1f58e54c1.tar.xz",
    debian: false,
};
const CPUINFO_6882AF5: Tarball = Tarball {
    package: "cpuinfo",
    file: "cpuinfo-6882af581bbbdd073c946eae4fd21bc037ff39cf.tar.xz",
    debian: false,
};
const PTHREADPOOL_0E6CA13: Tarball = Tarball {
    package: "pthreadpool",
    file: "pthreadpool-0e6ca13779b57d397a5ba6bfdcaa8a275bc8ea2e.tar.xz",
    debian: false,
};

/// A pinned XNNPACK and the dependencies it builds with.
struct Pin {
    name: &'static str,
    xnnpack: &'static Tarball,
    cpuinfo: &'static Tarball,
    pthreadpool: &'static Tarball,
    /// FXdiv, when the pin's XNNPACK or pthreadpool uses it.
    fxdiv: Option<&'static Tarball>,
}

const PINS: &[Pin] = &[
    Pin { name: "4ea82e5", xnnpack: &XNNPACK, cpuinfo: &CPUINFO, pthreadpool: &PTHREADPOOL, fxdiv: Some(&FXDIV) },
    Pin {
        name: "92a7ad5",
        xnnpack: &XNNPACK_92A7AD5,
        cpuinfo: &CPUINFO_6882AF5,
        pthreadpool: &PTHREADPOOL_0E6CA13,
        // XNNPACK itself no longer uses it, but this pthreadpool does.
        fxdiv: Some(&FXDIV),
    },
];

/// The pin `XNNCACHE_XNNPACK` names (default: the first, Debian's).
fn pin() -> &'static Pin {
    match env_var("XNNCACHE_XNNPACK") {
        None => &PINS[0],
        Some(name) => PINS.iter().find(|p| name.starts_with(p.name) || p.name.starts_with(&name) && name.len() >= 7).unwrap_or_else(|| {
            let known: Vec<&str> = PINS.iter().map(|p| p.name).collect();
            panic!("xnnpack-sys: XNNCACHE_XNNPACK={name} is not a pinned XNNPACK; known: {}", known.join(", "))
        }),
    }
}

/// The static libraries, in link order, and whether each must exist. The
/// microkernels library was renamed in newer XNNPACK; kleidiai only exists on Arm.
const LIBS: &[(&str, bool)] = &[
    ("XNNPACK", true),
    ("microkernels-prod", false),
    ("xnnpack-microkernels-prod", false),
    ("kleidiai", false),
    ("pthreadpool", true),
    ("cpuinfo", true),
];

/// The cmake options that shape the output (the source folders are added per build).
const CMAKE_FLAGS: &[&str] = &[
    "-DCMAKE_BUILD_TYPE=Release",
    "-DCMAKE_POSITION_INDEPENDENT_CODE=ON",
    "-DXNNPACK_LIBRARY_TYPE=static",
    "-DXNNPACK_BUILD_TESTS=OFF",
    "-DXNNPACK_BUILD_BENCHMARKS=OFF",
    "-DXNNPACK_BUILD_ALL_MICROKERNELS=OFF",
];

/// Environment variables that cmake or the compilers read: part of the key.
const COMPILER_ENV: &[&str] = &[
    "CC",
    "CXX",
    "CFLAGS",
    "CXXFLAGS",
    "ASMFLAGS",
    "LDFLAGS",
    "CMAKE_TOOLCHAIN_FILE",
];

const MANIFEST: &str = "manifest.txt";

/// What the rest of the build needs to know about an XNNPACK build.
struct Install {
    lib_dir: PathBuf,
    libs: Vec<String>,
    /// Folder holding xnnpack.h.
    include: PathBuf,
    /// Folder holding pthreadpool.h (xnnpack.h includes it).
    include_pthreadpool: PathBuf,
    /// Whether the libraries need the C++ runtime.
    cxx: bool,
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=sources.txt");
    println!("cargo::rustc-check-cfg=cfg(xnnpack_sys_fetch_only)");
    println!("cargo::rustc-check-cfg=cfg(xnnpack_has_build_identifier)");

    // A knob for preparing offline machines and testing the download path:
    // fetch and verify the tarballs into the cache, build nothing.
    if env_var("XNNPACK_SYS_FETCH_ONLY").is_some() {
        fetch_only();
        return;
    }

    // bindgen needs libclang; find out now rather than after a 3-minute build.
    check_libclang();

    let install = match (env_path("XNNPACK_LIB_DIR"), env_var("XNNPACK_INCLUDE_DIR")) {
        (Some(lib), Some(include)) => prebuilt(&lib, &include),
        (None, None) => cached_build(),
        _ => panic!("xnnpack-sys: set both XNNPACK_LIB_DIR and XNNPACK_INCLUDE_DIR, or neither"),
    };
    // Which XNNPACK this is, for tests and benchmarks that report it.
    let pinned = env_var("XNNPACK_LIB_DIR").is_none() && env_var("XNNPACK_SOURCE_DIR").is_none();
    let name = if pinned { pin().name } else { "custom" };
    println!("cargo:pin={name}");
    println!("cargo:rustc-env=XNNPACK_SYS_PIN={name}");
    link(&install);
    export_paths(&install);
    generate_bindings(&install);
}

// ---------------------------------------------------------------------------
// Environment

/// Reads an environment variable and tells cargo to rerun when it changes.
fn env_var(name: &str) -> Option<String> {
    println!("cargo:rerun-if-env-changed={name}");
    env::var(name).ok().filter(|v| !v.is_empty())
}

fn env_path(name: &str) -> Option<PathBuf> {
    env_var(name).map(|v| absolute(Path::new(&v)))
}

/// Relative paths are taken from the folder cargo runs us in (this package's).
fn absolute(path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        env::current_dir()
            .expect("the current folder is readable")
            .join(path)
    }
}

fn cargo_env(name: &str) -> String {
    env::var(name).unwrap_or_else(|_| panic!("cargo sets {name} for build scripts"))
}

fn out_dir() -> PathBuf {
    PathBuf::from(cargo_env("OUT_DIR"))
}

/// The cache root: outside the work tree so that it survives `cargo clean`.
fn cache_root() -> PathBuf {
    let root = if let Some(dir) = env_path("XNNCACHE_BUILD_CACHE") {
        dir
    } else if let Some(dir) = env_path("XDG_CACHE_HOME") {
        dir.join("xnncache")
    } else if let Some(home) = env_path("HOME") {
        home.join(".cache").join("xnncache")
    } else {
        panic!("xnnpack-sys: set XNNCACHE_BUILD_CACHE (or HOME) to a folder for the XNNPACK build cache");
    };
    fs::create_dir_all(&root)
        .unwrap_or_else(|e| panic!("xnnpack-sys: cannot create {}: {e}", root.display()));
    root
}

fn jobs() -> usize {
    env_var("NUM_JOBS")
        .and_then(|n| n.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

// ---------------------------------------------------------------------------
// Tools

fn check_libclang() {
    let found = std::panic::catch_unwind(bindgen::clang_version).is_ok();
    if !found {
        panic!("xnnpack-sys: bindgen cannot load libclang (set LIBCLANG_PATH to its folder); {INSTALL_HINT}");
    }
}

/// `program --version`'s output, or None when the program cannot run.
fn version_of(command: &str) -> Option<String> {
    let mut words = command.split_whitespace();
    let program = words.next()?;
    let out = Command::new(program)
        .args(words)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn c_compiler() -> String {
    env_var("CC").unwrap_or_else(|| "cc".into())
}

fn cxx_compiler() -> String {
    env_var("CXX").unwrap_or_else(|| "c++".into())
}

/// Fails early, with the install hint, when a tool of the source build is missing.
fn check_build_tools() {
    let tools = [
        ("cmake".to_string()),
        "ninja".into(),
        "python3".into(),
        c_compiler(),
        cxx_compiler(),
    ];
    let missing: Vec<&str> = tools
        .iter()
        .filter(|t| version_of(t).is_none())
        .map(|t| t.as_str())
        .collect();
    if !missing.is_empty() {
        panic!(
            "xnnpack-sys: building XNNPACK needs {}, which cannot be run here; {INSTALL_HINT}",
            missing.join(", ")
        );
    }
}

/// Runs a command with its output going to a log file; panics with the log's tail on failure.
fn run_logged(cmd: &mut Command, log: &Path) {
    let file = fs::File::create(log)
        .unwrap_or_else(|e| panic!("xnnpack-sys: cannot create {}: {e}", log.display()));
    let err = file
        .try_clone()
        .expect("a log file handle can be duplicated");
    let status = cmd
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(err)
        .status()
        .unwrap_or_else(|e| panic!("xnnpack-sys: cannot run {cmd:?}: {e}; {INSTALL_HINT}"));
    if !status.success() {
        let text = fs::read_to_string(log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(40)..].join("\n");
        panic!(
            "xnnpack-sys: {cmd:?} failed ({status}); last lines of {}:\n{tail}",
            log.display()
        );
    }
}

// ---------------------------------------------------------------------------
// Source tarballs

fn sha256_file(path: &Path) -> io::Result<String> {
    let mut file = fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Returns a verified copy of the tarball: from XNNCACHE_DEPS_DIR, from the
/// download cache, or freshly downloaded.
fn tarball(t: &Tarball, root: &Path) -> PathBuf {
    if let Some(deps) = env_path("XNNCACHE_DEPS_DIR") {
        let path = deps.join(t.file);
        if path.is_file() {
            verify(&path, t);
            return path;
        }
        println!(
            "cargo:warning={} is not in XNNCACHE_DEPS_DIR ({}); downloading it",
            t.file,
            deps.display()
        );
    }
    if !t.debian {
        panic!(
            "xnnpack-sys: {} (sha256 {}) is not in Debian's archive; put it in a folder and set \
             XNNCACHE_DEPS_DIR to that folder (the README says where these tarballs come from)",
            t.file, t.sha256()
        );
    }
    let downloads = root.join("downloads");
    fs::create_dir_all(&downloads)
        .unwrap_or_else(|e| panic!("xnnpack-sys: cannot create {}: {e}", downloads.display()));
    let path = downloads.join(t.file);
    if path.is_file() {
        if sha256_file(&path).ok().as_deref() == Some(t.sha256()) {
            return path;
        }
        // A corrupt or truncated earlier download: fetch it again.
        let _ = fs::remove_file(&path);
    }
    download(t, &path);
    path
}

fn verify(path: &Path, t: &Tarball) {
    let actual = sha256_file(path)
        .unwrap_or_else(|e| panic!("xnnpack-sys: cannot read {}: {e}", path.display()));
    if actual != t.sha256() {
        panic!(
            "xnnpack-sys: {} has sha256 {actual}, expected {}; it is not the tarball this crate builds \
             (replace it with the right file, or remove it to have it downloaded)",
            path.display(),
            t.sha256()
        );
    }
}

/// The Debian mirrors apt is configured with (not the security archive).
fn debian_mirrors() -> Vec<String> {
    if let Some(mirror) = env_var("XNNCACHE_DEBIAN_MIRROR") {
        return vec![mirror.trim_end_matches('/').to_string()];
    }
    let mut uris = Vec::new();
    // deb822 style: `URIs: a b` in /etc/apt/sources.list.d/*.sources.
    // One-line style: `deb [options] uri suite components` in sources.list(.d/*.list).
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(dir) = fs::read_dir("/etc/apt/sources.list.d") {
        let mut more: Vec<PathBuf> = dir.filter_map(|e| e.ok().map(|e| e.path())).collect();
        more.sort();
        files.extend(more);
    }
    for file in files {
        let Ok(text) = fs::read_to_string(&file) else {
            continue;
        };
        for line in text
            .lines()
            .map(|l| l.split('#').next().unwrap_or("").trim())
        {
            if let Some(rest) = line.strip_prefix("URIs:") {
                uris.extend(rest.split_whitespace().map(String::from));
            } else if line.starts_with("deb ") || line.starts_with("deb-src ") {
                uris.extend(one_line_uri(line));
            }
        }
    }
    let mut mirrors = Vec::new();
    for uri in uris {
        let uri = uri.trim_end_matches('/').to_string();
        if uri.ends_with("/debian") && !mirrors.contains(&uri) {
            mirrors.push(uri);
        }
    }
    mirrors
}

/// The URI of a `deb [opt=val ...] uri suite components` line.
fn one_line_uri(line: &str) -> Option<String> {
    let mut words = line.split_whitespace().skip(1);
    let mut word = words.next()?;
    if word.starts_with('[') {
        while !word.ends_with(']') {
            word = words.next()?;
        }
        word = words.next()?;
    }
    Some(word.to_string())
}

/// `pool/main/<letter>/<package>/<file>`; lib* packages sit under `lib<letter>`.
fn pool_path(t: &Tarball) -> String {
    let letter = if t.package.starts_with("lib") {
        &t.package[..4]
    } else {
        &t.package[..1]
    };
    format!("pool/main/{letter}/{}/{}", t.package, t.file)
}

enum Fetch {
    Done,
    /// The server answered with this HTTP status.
    Status(u32),
    Failed(String),
    /// This downloader is not installed.
    NoTool,
}

/// Downloads, verifies and moves the tarball into place; explains a 404.
fn download(t: &Tarball, dest: &Path) {
    let mirrors = debian_mirrors();
    if mirrors.is_empty() {
        panic!(
            "xnnpack-sys: found no Debian mirror in apt's sources to download {} from; put the four \
             source tarballs in a folder and set XNNCACHE_DEPS_DIR to it (or XNNCACHE_DEBIAN_MIRROR to a mirror)",
            t.file
        );
    }
    let part = dest.with_extension(format!("part-{}", std::process::id()));
    let mut errors = Vec::new();
    let mut not_found = 0;
    for mirror in &mirrors {
        let url = format!("{mirror}/{}", pool_path(t));
        eprintln!("xnnpack-sys: downloading {url}");
        let outcome = [curl, wget, python_urllib]
            .iter()
            .map(|fetch| fetch(&url, &part))
            .find(|o| !matches!(o, Fetch::NoTool))
            .unwrap_or(Fetch::Failed(
                "none of curl, wget and python3 is installed".into(),
            ));
        match outcome {
            Fetch::Done => {
                verify(&part, t);
                fs::rename(&part, dest).expect("the download can be moved into place");
                return;
            }
            Fetch::Status(404) => {
                not_found += 1;
                errors.push(format!("{url}: 404 Not Found"));
            }
            Fetch::Status(code) => errors.push(format!("{url}: HTTP {code}")),
            Fetch::Failed(why) => errors.push(format!("{url}: {why}")),
            Fetch::NoTool => unreachable!(),
        }
        let _ = fs::remove_file(&part);
    }
    if not_found == mirrors.len() {
        panic!(
            "xnnpack-sys: {} is no longer in Debian's pool (404; old versions leave it when newer ones arrive). \
             Put a copy of it (sha256 {}) and the other three tarballs in a folder and set \
             XNNCACHE_DEPS_DIR to that folder. Tried: {}",
            t.file,
            t.sha256(),
            errors.join("; ")
        );
    }
    panic!(
        "xnnpack-sys: could not download {}: {}. Without network access, put the four tarballs in a folder \
         and set XNNCACHE_DEPS_DIR to it",
        t.file,
        errors.join("; ")
    );
}

fn spawn_output(cmd: &mut Command) -> Option<std::process::Output> {
    match cmd.stdin(Stdio::null()).output() {
        Ok(out) => Some(out),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => Some(std::process::Output {
            status: std::os::unix::process::ExitStatusExt::from_raw(1 << 8),
            stdout: Vec::new(),
            stderr: e.to_string().into_bytes(),
        }),
    }
}

fn curl(url: &str, dest: &Path) -> Fetch {
    let Some(out) = spawn_output(
        Command::new("curl")
            .args([
                "-sS",
                "-L",
                "--retry",
                "2",
                "--connect-timeout",
                "30",
                "-w",
                "%{http_code}",
                "-o",
            ])
            .arg(dest)
            .arg(url),
    ) else {
        return Fetch::NoTool;
    };
    let code: u32 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    match (out.status.success(), code) {
        (true, 200) => Fetch::Done,
        (true, code) => Fetch::Status(code),
        (false, _) => Fetch::Failed(format!(
            "curl: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
    }
}

fn wget(url: &str, dest: &Path) -> Fetch {
    let Some(out) = spawn_output(
        Command::new("wget")
            .args(["-q", "--server-response", "--tries=3", "-O"])
            .arg(dest)
            .arg(url),
    ) else {
        return Fetch::NoTool;
    };
    if out.status.success() {
        return Fetch::Done;
    }
    let log = String::from_utf8_lossy(&out.stderr);
    // With --server-response, wget prints each response's status line.
    let code = log
        .lines()
        .filter_map(|l| l.trim().strip_prefix("HTTP/"))
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u32>().ok())
        .next_back();
    match code {
        Some(code) if code >= 400 => Fetch::Status(code),
        _ => Fetch::Failed(format!("wget: {}", log.trim())),
    }
}

fn python_urllib(url: &str, dest: &Path) -> Fetch {
    const SCRIPT: &str = "import sys, shutil, urllib.request, urllib.error\n\
        try:\n    r = urllib.request.urlopen(sys.argv[1], timeout=60)\n\
        except urllib.error.HTTPError as e:\n    print(e.code); sys.exit(3)\n\
        with r, open(sys.argv[2], 'wb') as f:\n    shutil.copyfileobj(r, f)\n";
    let Some(out) = spawn_output(Command::new("python3").args(["-c", SCRIPT, url]).arg(dest))
    else {
        return Fetch::NoTool;
    };
    match out.status.code() {
        Some(0) => Fetch::Done,
        Some(3) => Fetch::Status(
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse()
                .unwrap_or(0),
        ),
        _ => Fetch::Failed(format!(
            "python3: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
    }
}

fn fetch_only() {
    let root = cache_root();
    let pin = pin();
    for t in [Some(pin.xnnpack), Some(pin.cpuinfo), Some(pin.pthreadpool), pin.fxdiv].into_iter().flatten() {
        let path = tarball(t, &root);
        println!(
            "cargo:warning=XNNPACK_SYS_FETCH_ONLY: {} verified",
            path.display()
        );
    }
    println!("cargo:rustc-cfg=xnnpack_sys_fetch_only");
}

/// Unpacks a tarball into `dest` and returns its source root: the xnnpack
/// tarball has no top-level folder, the others have one.
fn extract(tarball: &Path, dest: &Path) -> PathBuf {
    if dest.exists() {
        fs::remove_dir_all(dest).expect("a stale source folder can be removed");
    }
    fs::create_dir_all(dest).expect("the source folder can be created");
    if version_of("xz").is_none() {
        panic!(
            "xnnpack-sys: unpacking {} needs xz; {INSTALL_HINT}",
            tarball.display()
        );
    }
    run_logged(
        Command::new("tar")
            .arg("--no-same-owner")
            .arg("-xJf")
            .arg(tarball)
            .arg("-C")
            .arg(dest),
        &dest.with_extension("tar.log"),
    );
    let entries: Vec<PathBuf> = fs::read_dir(dest)
        .expect("just unpacked")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    match entries.as_slice() {
        [only] if only.is_dir() => only.clone(),
        _ => dest.to_path_buf(),
    }
}

// ---------------------------------------------------------------------------
// Sources and the cache key

/// Where one of the four source trees comes from.
enum Source {
    Tarball(&'static Tarball),
    Dir(PathBuf),
}

impl Source {
    fn from_env(var: &str, tarball: &'static Tarball) -> Source {
        match env_path(var) {
            Some(dir) => {
                if !dir.join("CMakeLists.txt").is_file() {
                    panic!("xnnpack-sys: {var}={} has no CMakeLists.txt", dir.display());
                }
                Source::Dir(dir)
            }
            None => Source::Tarball(tarball),
        }
    }

    /// A line of the cache key: the tarball's hash, or the folder plus a cheap fingerprint.
    fn key(&self) -> String {
        match self {
            Source::Tarball(t) => format!("tarball {} sha256 {}", t.file, t.sha256()),
            Source::Dir(dir) => format!("dir {} {}", dir.display(), fingerprint(dir)),
        }
    }

    /// Returns the source root, unpacking the tarball under `scratch` if needed.
    fn prepare(&self, root: &Path, scratch: &Path) -> PathBuf {
        match self {
            Source::Tarball(t) => extract(&tarball(t, root), &scratch.join(t.package)),
            Source::Dir(dir) => dir.clone(),
        }
    }
}

/// Sizes and modification times of a few telling files, plus the git commit
/// when the tree is a checkout. Touch CMakeLists.txt to force a rebuild.
fn fingerprint(dir: &Path) -> String {
    let mut parts = Vec::new();
    for name in ["CMakeLists.txt", "include/xnnpack.h", "include", "src"] {
        let path = dir.join(name);
        if let Ok(meta) = fs::metadata(&path) {
            if meta.is_file() {
                println!("cargo:rerun-if-changed={}", path.display());
            }
            let mtime = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .unwrap_or_default();
            parts.push(format!("{name}:{}:{}", meta.len(), mtime.as_nanos()));
        }
    }
    if let Some(commit) = git_head(dir) {
        parts.push(format!("git:{commit}"));
    }
    parts.join(" ")
}

/// The commit a git checkout (or submodule) is at, without running git.
fn git_head(dir: &Path) -> Option<String> {
    let dot_git = dir.join(".git");
    let git_dir = if dot_git.is_file() {
        let text = fs::read_to_string(&dot_git).ok()?;
        dir.join(text.trim().strip_prefix("gitdir:")?.trim())
    } else {
        dot_git
    };
    let head = fs::read_to_string(git_dir.join("HEAD")).ok()?;
    let Some(reference) = head.trim().strip_prefix("ref:") else {
        return Some(head.trim().to_string());
    };
    let reference = reference.trim();
    if let Ok(commit) = fs::read_to_string(git_dir.join(reference)) {
        return Some(commit.trim().to_string());
    }
    let packed = fs::read_to_string(git_dir.join("packed-refs")).ok()?;
    packed
        .lines()
        .find(|l| l.ends_with(reference))
        .map(|l| l.split_whitespace().next().unwrap_or("").to_string())
}

struct Sources {
    xnnpack: Source,
    cpuinfo: Source,
    pthreadpool: Source,
    fxdiv: Option<Source>,
}

impl Sources {
    fn from_env(pin: &'static Pin) -> Sources {
        let fxdiv = match (env_path("FXDIV_SOURCE_DIR"), pin.fxdiv) {
            (Some(_), _) => Some(Source::from_env("FXDIV_SOURCE_DIR", &FXDIV)),
            (None, Some(t)) => Some(Source::Tarball(t)),
            (None, None) => None,
        };
        Sources {
            xnnpack: Source::from_env("XNNPACK_SOURCE_DIR", pin.xnnpack),
            cpuinfo: Source::from_env("CPUINFO_SOURCE_DIR", pin.cpuinfo),
            pthreadpool: Source::from_env("PTHREADPOOL_SOURCE_DIR", pin.pthreadpool),
            fxdiv,
        }
    }
}

/// Everything that changes the built libraries, as readable text (kept in key.txt).
fn key_text(sources: &Sources) -> String {
    let mut lines = vec![
        format!("script: {SCRIPT_VERSION}"),
        format!("target: {}", cargo_env("TARGET")),
        format!("xnnpack: {}", sources.xnnpack.key()),
        format!("cpuinfo: {}", sources.cpuinfo.key()),
        format!("pthreadpool: {}", sources.pthreadpool.key()),
        format!("fxdiv: {}", sources.fxdiv.as_ref().map_or("none".into(), Source::key)),
        format!("cmake flags: -G Ninja {}", CMAKE_FLAGS.join(" ")),
        format!(
            "cmake: {}",
            version_of("cmake")
                .unwrap_or_default()
                .lines()
                .next()
                .unwrap_or("")
        ),
        format!(
            "cc: {}\n{}",
            c_compiler(),
            version_of(&c_compiler()).unwrap_or_default()
        ),
        format!(
            "c++: {}\n{}",
            cxx_compiler(),
            version_of(&cxx_compiler()).unwrap_or_default()
        ),
    ];
    for var in COMPILER_ENV {
        if let Some(value) = env_var(var) {
            lines.push(format!("env {var}={value}"));
        }
    }
    lines.join("\n") + "\n"
}

// ---------------------------------------------------------------------------
// The cached source build

/// An exclusive flock(2) on a file: one build at a time per cache, across processes.
struct Lock(#[allow(dead_code)] fs::File);

impl Lock {
    fn acquire(path: &Path) -> Lock {
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .unwrap_or_else(|e| {
                panic!(
                    "xnnpack-sys: cannot open the lock file {}: {e}",
                    path.display()
                )
            });
        let fd = file.as_raw_fd();
        // SAFETY: flock on a file descriptor we own.
        if unsafe { libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            eprintln!(
                "xnnpack-sys: waiting for another build holding {}",
                path.display()
            );
            loop {
                // SAFETY: as above; retried when a signal interrupts the wait.
                if unsafe { libc::flock(fd, libc::LOCK_EX) } == 0 {
                    break;
                }
                let err = io::Error::last_os_error();
                if err.kind() != io::ErrorKind::Interrupted {
                    panic!("xnnpack-sys: cannot lock {}: {err}", path.display());
                }
            }
        }
        Lock(file) // released when the file closes
    }
}

fn cached_build() -> Install {
    // Cross builds would need a toolchain file; the key assumes host == target.
    let (target, host) = (cargo_env("TARGET"), cargo_env("HOST"));
    if target != host {
        panic!("xnnpack-sys: cannot build XNNPACK for {target} on {host}; build it yourself and set XNNPACK_LIB_DIR and XNNPACK_INCLUDE_DIR");
    }
    check_build_tools();
    let root = cache_root();
    let sources = Sources::from_env(pin());
    let key_text = key_text(&sources);
    let key = hex(&Sha256::digest(key_text.as_bytes()))[..16].to_string();
    let dir = root.join("builds").join(&key);
    // Rerun when someone deletes the cache, so the libraries get rebuilt.
    println!("cargo:rerun-if-changed={}", dir.join(MANIFEST).display());

    // A finished build appears by rename, so its manifest means it is complete.
    if !dir.join(MANIFEST).is_file() {
        let _lock = Lock::acquire(&root.join("lock"));
        if !dir.join(MANIFEST).is_file() {
            build(&root, &dir, &key, &key_text, &sources);
        }
    }
    read_manifest(&dir)
}

/// Builds into `<key>.tmp-<pid>` and renames the result to `dir` when complete.
fn build(root: &Path, dir: &Path, key: &str, key_text: &str, sources: &Sources) {
    let builds = dir.parent().expect("builds/<key> has a parent");
    remove_stale_builds(builds);
    let tmp = builds.join(format!("{key}.tmp-{}", std::process::id()));
    let out = tmp.join("out");
    let logs = out.join("logs");
    fs::create_dir_all(&logs)
        .unwrap_or_else(|e| panic!("xnnpack-sys: cannot create {}: {e}", logs.display()));

    let scratch = tmp.join("src");
    let xnnpack = sources.xnnpack.prepare(root, &scratch);
    let cpuinfo = sources.cpuinfo.prepare(root, &scratch);
    let pthreadpool = sources.pthreadpool.prepare(root, &scratch);
    let fxdiv = sources.fxdiv.as_ref().map(|f| f.prepare(root, &scratch));

    let jobs = jobs();
    let minutes = 5usize.div_ceil(jobs); // about 5 core-minutes
    println!(
        "cargo:warning=building XNNPACK from source into {} (about {minutes} minutes on {jobs} cores; later builds reuse it)",
        dir.display()
    );
    let started = Instant::now();

    // Configure: the facts file's command, with sources taken from our folders.
    let build_dir = tmp.join("build");
    fs::create_dir_all(&build_dir).expect("the build folder can be created");
    run_logged(
        Command::new("cmake")
            .current_dir(&build_dir)
            .args(["-G", "Ninja"])
            .arg(&xnnpack)
            .args(CMAKE_FLAGS)
            .arg(format!("-DCPUINFO_SOURCE_DIR={}", cpuinfo.display()))
            .arg(format!(
                "-DPTHREADPOOL_SOURCE_DIR={}",
                pthreadpool.display()
            ))
            .args(fxdiv.map(|f| format!("-DFXDIV_SOURCE_DIR={}", f.display()))),
        &logs.join("cmake.log"),
    );
    // Compile: about a thousand steps.
    run_logged(
        Command::new("ninja")
            .current_dir(&build_dir)
            .arg(format!("-j{jobs}")),
        &logs.join("ninja.log"),
    );

    // Keep only what dependents need: the libraries and the headers.
    let libs = collect_libs(&build_dir, &out.join("lib"));
    copy_dir(&xnnpack.join("include"), &out.join("include"));
    copy_dir(&pthreadpool.join("include"), &out.join("include"));
    let lib_files: Vec<PathBuf> = libs
        .iter()
        .map(|l| out.join("lib").join(format!("lib{l}.a")))
        .collect();
    let cxx = needs_cxx(&lib_files);
    fs::write(out.join("key.txt"), key_text).expect("key.txt can be written");
    fs::write(
        out.join(MANIFEST),
        format!("libs={}\ncxx={}\n", libs.join(","), cxx as u8),
    )
    .expect("the manifest can be written");

    fs::rename(&out, dir).unwrap_or_else(|e| {
        panic!(
            "xnnpack-sys: cannot move the build to {}: {e}",
            dir.display()
        )
    });
    let _ = fs::remove_dir_all(&tmp);
    println!(
        "cargo:warning=built XNNPACK in {}",
        format_duration(started.elapsed())
    );
}

/// Temporary folders of builds that were killed; safe to remove under the lock.
fn remove_stale_builds(builds: &Path) {
    let Ok(entries) = fs::read_dir(builds) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().contains(".tmp-") {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// Finds the static libraries anywhere in the cmake build tree and copies them to `dest`.
fn collect_libs(build_dir: &Path, dest: &Path) -> Vec<String> {
    fs::create_dir_all(dest).expect("the lib folder can be created");
    gather_libs(build_dir, &format!("the build in {}", build_dir.display()), &mut |from, file| {
        fs::copy(from, dest.join(file)).expect("a library can be copied");
    })
}

/// Finds each of [`LIBS`] below `dir` and hands it to `place` (with its file
/// name); panics naming `what` when a required one is missing. Returns the
/// names found, in link order.
fn gather_libs(dir: &Path, what: &str, place: &mut dyn FnMut(&Path, &str)) -> Vec<String> {
    let mut found = Vec::new();
    find_files(dir, &mut |p| p.extension().is_some_and(|e| e == "a"), &mut found);
    let mut libs = Vec::new();
    for (name, required) in LIBS {
        let file = format!("lib{name}.a");
        match found.iter().find(|p| p.file_name().is_some_and(|f| f == file.as_str())) {
            Some(path) => {
                place(path, &file);
                libs.push(name.to_string());
            }
            None if *required => panic!("xnnpack-sys: {what} holds no {file}; it has {found:?}"),
            None => {}
        }
    }
    libs
}

fn find_files(dir: &Path, wanted: &mut dyn FnMut(&Path) -> bool, found: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            find_files(&path, wanted, found);
        } else if wanted(&path) {
            found.push(path);
        }
    }
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("a header folder can be created");
    for entry in fs::read_dir(from)
        .unwrap_or_else(|e| panic!("xnnpack-sys: cannot read {}: {e}", from.display()))
        .flatten()
    {
        let target = to.join(entry.file_name());
        if entry.file_type().is_ok_and(|k| k.is_dir()) {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).expect("a header can be copied");
        }
    }
}

/// Whether symbols left undefined by the libraries come from the C++ runtime.
fn needs_cxx(libs: &[PathBuf]) -> bool {
    let out = match Command::new("nm")
        .arg("-g")
        .arg("--format=posix")
        .args(libs)
        .stdin(Stdio::null())
        .output()
    {
        Ok(out) if out.status.success() => out,
        _ => {
            println!(
                "cargo:warning=nm (binutils) is missing: assuming XNNPACK needs no C++ runtime"
            );
            return false;
        }
    };
    let (mut defined, mut undefined) = (BTreeSet::new(), BTreeSet::new());
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let mut words = line.split_whitespace();
        let (Some(symbol), Some(kind)) = (words.next(), words.next()) else {
            continue;
        };
        match kind {
            "U" => undefined.insert(symbol.to_string()),
            "w" | "v" => false,
            _ if kind.len() == 1 => defined.insert(symbol.to_string()),
            _ => false,
        };
    }
    undefined.difference(&defined).any(|s| {
        s.starts_with("_Z") || s.starts_with("__cxa_") || s.starts_with("__gxx_personality")
    })
}

fn read_manifest(dir: &Path) -> Install {
    let text = fs::read_to_string(dir.join(MANIFEST)).expect("a finished build has a manifest");
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix('='))
            .unwrap_or_else(|| panic!("xnnpack-sys: {} lacks {name}", dir.join(MANIFEST).display()))
            .to_string()
    };
    Install {
        lib_dir: dir.join("lib"),
        libs: field("libs").split(',').map(String::from).collect(),
        include: dir.join("include"),
        include_pthreadpool: dir.join("include"),
        cxx: field("cxx") == "1",
    }
}

fn format_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

// ---------------------------------------------------------------------------
// A user's own built XNNPACK

/// Uses libraries from XNNPACK_LIB_DIR (searched a few levels deep, as in a
/// cmake build tree) and headers from XNNPACK_INCLUDE_DIR (a `:`-separated list).
fn prebuilt(lib_dir: &Path, include: &str) -> Install {
    // Gather them in one folder (symlinks), so dependents get a single LIB_DIR.
    let flat = out_dir().join("xnnpack-lib");
    let _ = fs::remove_dir_all(&flat);
    fs::create_dir_all(&flat).expect("OUT_DIR is writable");
    let libs = gather_libs(lib_dir, &format!("XNNPACK_LIB_DIR={}", lib_dir.display()), &mut |from, file| {
        println!("cargo:rerun-if-changed={}", from.display());
        std::os::unix::fs::symlink(from, flat.join(file)).expect("OUT_DIR is writable");
    });
    let dirs: Vec<PathBuf> = env::split_paths(include).map(|p| absolute(&p)).collect();
    let holding = |header: &str| {
        dirs.iter().find(|d| d.join(header).is_file()).cloned().unwrap_or_else(|| {
            panic!("xnnpack-sys: no folder in XNNPACK_INCLUDE_DIR={include} holds {header} (list several folders with ':')")
        })
    };
    let lib_files: Vec<PathBuf> = libs
        .iter()
        .map(|l| flat.join(format!("lib{l}.a")))
        .collect();
    Install {
        lib_dir: flat,
        cxx: needs_cxx(&lib_files),
        libs,
        include: holding("xnnpack.h"),
        include_pthreadpool: holding("pthreadpool.h"),
    }
}

// ---------------------------------------------------------------------------
// Outputs

/// Link order: XNNPACK, microkernels, pthreadpool, cpuinfo, then the C runtime pieces.
fn link(install: &Install) {
    println!(
        "cargo:rustc-link-search=native={}",
        install.lib_dir.display()
    );
    for lib in &install.libs {
        println!("cargo:rustc-link-lib=static={lib}");
    }
    if install.cxx {
        println!("cargo:rustc-link-lib=stdc++");
    }
    println!("cargo:rustc-link-lib=m");
    println!("cargo:rustc-link-lib=pthread");
}

/// Paths for dependents: `DEP_XNNPACK_*` in their build scripts, and constants in lib.rs.
fn export_paths(install: &Install) {
    let libs = install.libs.join(",");
    println!("cargo:include={}", install.include.display());
    println!(
        "cargo:include_pthreadpool={}",
        install.include_pthreadpool.display()
    );
    println!("cargo:lib_dir={}", install.lib_dir.display());
    println!("cargo:libs={libs}");
    println!("cargo:cxx={}", install.cxx as u8);
    println!(
        "cargo:rustc-env=XNNPACK_SYS_INCLUDE_DIR={}",
        install.include.display()
    );
    println!(
        "cargo:rustc-env=XNNPACK_SYS_PTHREADPOOL_INCLUDE_DIR={}",
        install.include_pthreadpool.display()
    );
    println!(
        "cargo:rustc-env=XNNPACK_SYS_LIB_DIR={}",
        install.lib_dir.display()
    );
    println!("cargo:rustc-env=XNNPACK_SYS_LIBS={libs}");
    println!("cargo:rustc-env=XNNPACK_SYS_LINK_CXX={}", install.cxx as u8);
}

fn generate_bindings(install: &Install) {
    let header = install.include.join("xnnpack.h");
    let text = fs::read_to_string(&header)
        .unwrap_or_else(|e| panic!("xnnpack-sys: cannot read {}: {e}", header.display()));
    // Older XNNPACK lacks the build identifier; let tests know.
    if text.contains("xnn_experimental_get_build_identifier_size") {
        println!("cargo:rustc-cfg=xnnpack_has_build_identifier");
    }
    let bindings = bindgen::Builder::default()
        .header(header.to_string_lossy())
        .clang_arg(format!("-I{}", install.include.display()))
        .clang_arg(format!("-I{}", install.include_pthreadpool.display()))
        .allowlist_function("xnn_.*")
        .allowlist_type("xnn_.*")
        .allowlist_var("xnn_.*")
        .allowlist_var("XNN_.*")
        .allowlist_function("pthreadpool_.*")
        .allowlist_type("pthreadpool_.*")
        .allowlist_var("PTHREADPOOL_.*")
        // Enums become a type alias plus constants named as in C (xnn_status_success).
        .default_enum_style(bindgen::EnumVariation::Consts)
        .prepend_enum_name(false)
        .derive_default(true)
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()))
        .generate()
        .unwrap_or_else(|e| panic!("xnnpack-sys: bindgen failed on {}: {e}", header.display()));
    let out = out_dir().join("bindings.rs");
    bindings
        .write_to_file(&out)
        .unwrap_or_else(|e| panic!("xnnpack-sys: cannot write {}: {e}", out.display()));
}
