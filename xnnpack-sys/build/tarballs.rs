//! Source tarballs: found in a folder, downloaded from Debian's pool, checked, unpacked.

use super::*;

pub(crate) fn sha256_file(path: &Path) -> io::Result<String> {
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

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Returns a verified copy of the tarball: from XNNCACHE_DEPS_DIR, from the
/// download cache, or freshly downloaded.
pub(crate) fn tarball(t: &Tarball, root: &Path) -> PathBuf {
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
             XNNCACHE_DEPS_DIR to that folder (docs/PLATFORMS.md says where these tarballs come from)",
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

pub(crate) fn verify(path: &Path, t: &Tarball) {
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
pub(crate) fn debian_mirrors() -> Vec<String> {
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
pub(crate) fn one_line_uri(line: &str) -> Option<String> {
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
pub(crate) fn pool_path(t: &Tarball) -> String {
    let letter = if t.package.starts_with("lib") {
        &t.package[..4]
    } else {
        &t.package[..1]
    };
    format!("pool/main/{letter}/{}/{}", t.package, t.file)
}

pub(crate) enum Fetch {
    Done,
    /// The server answered with this HTTP status.
    Status(u32),
    Failed(String),
    /// This downloader is not installed.
    NoTool,
}

/// Downloads, verifies and moves the tarball into place; explains a 404.
pub(crate) fn download(t: &Tarball, dest: &Path) {
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

pub(crate) fn spawn_output(cmd: &mut Command) -> Option<std::process::Output> {
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

pub(crate) fn curl(url: &str, dest: &Path) -> Fetch {
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

pub(crate) fn wget(url: &str, dest: &Path) -> Fetch {
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

pub(crate) fn python_urllib(url: &str, dest: &Path) -> Fetch {
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

pub(crate) fn fetch_only() {
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
pub(crate) fn extract(tarball: &Path, dest: &Path) -> PathBuf {
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
