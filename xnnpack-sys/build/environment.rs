//! The build script's environment: variables (each a rerun trigger), folders, jobs.

use super::*;

/// Reads an environment variable and tells cargo to rerun when it changes.
pub(crate) fn env_var(name: &str) -> Option<String> {
    println!("cargo:rerun-if-env-changed={name}");
    env::var(name).ok().filter(|v| !v.is_empty())
}

pub(crate) fn env_path(name: &str) -> Option<PathBuf> {
    env_var(name).map(|v| absolute(Path::new(&v)))
}

/// Relative paths are taken from the folder cargo runs us in (this package's).
pub(crate) fn absolute(path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        env::current_dir()
            .expect("the current folder is readable")
            .join(path)
    }
}

pub(crate) fn cargo_env(name: &str) -> String {
    env::var(name).unwrap_or_else(|_| panic!("cargo sets {name} for build scripts"))
}

pub(crate) fn out_dir() -> PathBuf {
    PathBuf::from(cargo_env("OUT_DIR"))
}

/// The cache root: outside the work tree so that it survives `cargo clean`.
pub(crate) fn cache_root() -> PathBuf {
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

pub(crate) fn jobs() -> usize {
    env_var("NUM_JOBS")
        .and_then(|n| n.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}
