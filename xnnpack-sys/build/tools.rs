//! The tools a source build needs, checked up front, and running them with a log.

use super::*;

pub(crate) fn check_libclang() {
    let found = std::panic::catch_unwind(bindgen::clang_version).is_ok();
    if !found {
        panic!("xnnpack-sys: bindgen cannot load libclang (set LIBCLANG_PATH to its folder); {INSTALL_HINT}");
    }
}

/// `program --version`'s output, or None when the program cannot run.
pub(crate) fn version_of(command: &str) -> Option<String> {
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

pub(crate) fn c_compiler() -> String {
    env_var("CC").unwrap_or_else(|| "cc".into())
}

pub(crate) fn cxx_compiler() -> String {
    env_var("CXX").unwrap_or_else(|| "c++".into())
}

/// Fails early, with the install hint, when a tool of the source build is missing.
pub(crate) fn check_build_tools() {
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
pub(crate) fn run_logged(cmd: &mut Command, log: &Path) {
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
