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
//!      commits, repacked as `.tar.xz`; docs/PLATFORMS.md lists names and sha256).
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

#[path = "build/environment.rs"]
mod environment;
#[path = "build/tools.rs"]
mod tools;
#[path = "build/tarballs.rs"]
mod tarballs;
#[path = "build/sources.rs"]
mod sources;
#[path = "build/cached.rs"]
mod cached;
#[path = "build/prebuilt.rs"]
mod prebuilt;
#[path = "build/outputs.rs"]
mod outputs;

use environment::*;
use tools::*;
use tarballs::*;
use sources::*;
use cached::*;
use prebuilt::*;
use outputs::*;

/// Part of every cache key: bump it when a change here changes what is built.
pub(crate) const SCRIPT_VERSION: &str = "xnnpack-sys build.rs 2";

/// Where to send people whose machine lacks a build tool.
pub(crate) const INSTALL_HINT: &str = "run scripts/install-deps.sh from the xnncache repository (it installs \
     cmake, ninja-build, python3, gcc, g++, libclang-dev, curl and xz-utils with apt-get), \
     or set XNNPACK_LIB_DIR and XNNPACK_INCLUDE_DIR to an XNNPACK you built yourself";

/// One source tarball (its sha256 is in `sources.txt`).
pub(crate) struct Tarball {
    package: &'static str,
    file: &'static str,
    /// Whether Debian's pool carries it (otherwise only `XNNCACHE_DEPS_DIR` does).
    debian: bool,
}

/// `sources.txt`: every tarball's name and sha256, written once for the
/// crate and the scripts.
pub(crate) const SOURCES: &str = include_str!("sources.txt");

impl Tarball {
    fn sha256(&self) -> &'static str {
        SOURCES
            .lines()
            .filter(|l| !l.starts_with('#'))
            .find_map(|l| l.split_once(' ').filter(|(f, _)| *f == self.file).map(|(_, s)| s.trim()))
            .unwrap_or_else(|| panic!("xnnpack-sys: {} is not in sources.txt", self.file))
    }
}

pub(crate) const XNNPACK: Tarball = Tarball {
    package: "xnnpack",
    file: "xnnpack_0.0~git20241108.4ea82e5.orig.tar.xz",
    debian: true,
};
pub(crate) const CPUINFO: Tarball = Tarball {
    package: "cpuinfo",
    file: "cpuinfo_0.0~git20250905.877328f.orig.tar.xz",
    debian: true,
};
pub(crate) const PTHREADPOOL: Tarball = Tarball {
    package: "pthreadpool",
    file: "pthreadpool_0.0~git20240616.560c60d.orig.tar.xz",
    debian: true,
};
pub(crate) const FXDIV: Tarball = Tarball {
    package: "fxdiv",
    file: "fxdiv_0.0~git20200417.b408327.orig.tar.xz",
    debian: true,
};

pub(crate) const XNNPACK_92A7AD5: Tarball = Tarball {
    package: "xnnpack",
    file: "xnnpack-92a7ad501b9516f9fecae119e0146dd1f58e54c1.tar.xz",
    debian: false,
};
pub(crate) const CPUINFO_6882AF5: Tarball = Tarball {
    package: "cpuinfo",
    file: "cpuinfo-6882af581bbbdd073c946eae4fd21bc037ff39cf.tar.xz",
    debian: false,
};
pub(crate) const PTHREADPOOL_0E6CA13: Tarball = Tarball {
    package: "pthreadpool",
    file: "pthreadpool-0e6ca13779b57d397a5ba6bfdcaa8a275bc8ea2e.tar.xz",
    debian: false,
};

/// A pinned XNNPACK and the dependencies it builds with.
pub(crate) struct Pin {
    name: &'static str,
    xnnpack: &'static Tarball,
    cpuinfo: &'static Tarball,
    pthreadpool: &'static Tarball,
    /// FXdiv, when the pin's XNNPACK or pthreadpool uses it.
    fxdiv: Option<&'static Tarball>,
}

pub(crate) const PINS: &[Pin] = &[
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
pub(crate) fn pin() -> &'static Pin {
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
pub(crate) const LIBS: &[(&str, bool)] = &[
    ("XNNPACK", true),
    ("microkernels-prod", false),
    ("xnnpack-microkernels-prod", false),
    ("kleidiai", false),
    ("pthreadpool", true),
    ("cpuinfo", true),
];

/// The cmake options that shape the output (the source folders are added per build).
pub(crate) const CMAKE_FLAGS: &[&str] = &[
    "-DCMAKE_BUILD_TYPE=Release",
    "-DCMAKE_POSITION_INDEPENDENT_CODE=ON",
    "-DXNNPACK_LIBRARY_TYPE=static",
    "-DXNNPACK_BUILD_TESTS=OFF",
    "-DXNNPACK_BUILD_BENCHMARKS=OFF",
    "-DXNNPACK_BUILD_ALL_MICROKERNELS=OFF",
];

/// Environment variables that cmake or the compilers read: part of the key.
pub(crate) const COMPILER_ENV: &[&str] = &[
    "CC",
    "CXX",
    "CFLAGS",
    "CXXFLAGS",
    "ASMFLAGS",
    "LDFLAGS",
    "CMAKE_TOOLCHAIN_FILE",
];

pub(crate) const MANIFEST: &str = "manifest.txt";

/// What the rest of the build needs to know about an XNNPACK build.
pub(crate) struct Install {
    lib_dir: PathBuf,
    libs: Vec<String>,
    /// Folder holding xnnpack.h.
    include: PathBuf,
    /// Folder holding pthreadpool.h (xnnpack.h includes it).
    include_pthreadpool: PathBuf,
    /// Whether the libraries need the C++ runtime.
    cxx: bool,
}

pub(crate) fn main() {
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
