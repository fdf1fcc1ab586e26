//! Where each source tree comes from, and the cache key made of it all.

use super::*;

/// Where one of the four source trees comes from.
pub(crate) enum Source {
    Tarball(&'static Tarball),
    Dir(PathBuf),
}

impl Source {
    pub(crate) fn from_env(var: &str, tarball: &'static Tarball) -> Source {
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
    pub(crate) fn key(&self) -> String {
        match self {
            Source::Tarball(t) => format!("tarball {} sha256 {}", t.file, t.sha256()),
            Source::Dir(dir) => format!("dir {} {}", dir.display(), fingerprint(dir)),
        }
    }

    /// Returns the source root, unpacking the tarball under `scratch` if needed.
    pub(crate) fn prepare(&self, root: &Path, scratch: &Path) -> PathBuf {
        match self {
            Source::Tarball(t) => extract(&tarball(t, root), &scratch.join(t.package)),
            Source::Dir(dir) => dir.clone(),
        }
    }
}

/// Sizes and modification times of a few telling files, plus the git commit
/// when the tree is a checkout. Touch CMakeLists.txt to force a rebuild.
pub(crate) fn fingerprint(dir: &Path) -> String {
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
pub(crate) fn git_head(dir: &Path) -> Option<String> {
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

pub(crate) struct Sources {
    pub(crate) xnnpack: Source,
    pub(crate) cpuinfo: Source,
    pub(crate) pthreadpool: Source,
    pub(crate) fxdiv: Option<Source>,
}

impl Sources {
    pub(crate) fn from_env(pin: &'static Pin) -> Sources {
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
pub(crate) fn key_text(sources: &Sources) -> String {
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
