//! The cached source build: locked, built with cmake and ninja, kept outside the work tree.

use super::*;

/// An exclusive flock(2) on a file: one build at a time per cache, across processes.
pub(crate) struct Lock(#[allow(dead_code)] fs::File);

impl Lock {
    pub(crate) fn acquire(path: &Path) -> Lock {
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

pub(crate) fn cached_build() -> Install {
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
pub(crate) fn build(root: &Path, dir: &Path, key: &str, key_text: &str, sources: &Sources) {
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
pub(crate) fn remove_stale_builds(builds: &Path) {
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
pub(crate) fn collect_libs(build_dir: &Path, dest: &Path) -> Vec<String> {
    fs::create_dir_all(dest).expect("the lib folder can be created");
    gather_libs(build_dir, &format!("the build in {}", build_dir.display()), &mut |from, file| {
        fs::copy(from, dest.join(file)).expect("a library can be copied");
    })
}

/// Finds each of [`LIBS`] below `dir` and hands it to `place` (with its file
/// name); panics naming `what` when a required one is missing. Returns the
/// names found, in link order.
pub(crate) fn gather_libs(dir: &Path, what: &str, place: &mut dyn FnMut(&Path, &str)) -> Vec<String> {
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

pub(crate) fn find_files(dir: &Path, wanted: &mut dyn FnMut(&Path) -> bool, found: &mut Vec<PathBuf>) {
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

pub(crate) fn copy_dir(from: &Path, to: &Path) {
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
pub(crate) fn needs_cxx(libs: &[PathBuf]) -> bool {
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

pub(crate) fn read_manifest(dir: &Path) -> Install {
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

pub(crate) fn format_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}
