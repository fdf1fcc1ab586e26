//! The C and C++ programs under tests/c and tests/cpp, compiled against
//! include/xnncache.h, each run in its own process.

use xnncache_tests::{run_child, TempDir};

extern "C" {
    fn xnncache_c_smoke_main() -> std::ffi::c_int;
    fn xnncache_cpp_smoke_main() -> std::ffi::c_int;
}

#[test]
#[ignore = "run in a child process by c_program_runs"]
fn child_c_program() {
    // SAFETY: the program's main; it only uses its own globals and the env.
    assert_eq!(unsafe { xnncache_c_smoke_main() }, 0);
}

#[test]
#[ignore = "run in a child process by cpp_program_runs"]
fn child_cpp_program() {
    // SAFETY: as above.
    assert_eq!(unsafe { xnncache_cpp_smoke_main() }, 0);
}

fn run(child: &str, marker: &str) {
    let dir = TempDir::new(child);
    let file = dir.file("cache.bin");
    let dropin = dir.file("dropin.bin");
    let out = run_child(child, &[("XNNCACHE_TEST_FILE", file.to_str().unwrap()), ("XNNCACHE_PATH", dropin.to_str().unwrap())], None);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && stdout.contains(marker), "{child}: {:?}\n{stdout}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    assert!(file.exists(), "the program's cache file was not created");
}

#[test]
fn c_program_runs() {
    run("child_c_program", "c-smoke-ok");
}

#[test]
fn cpp_program_runs() {
    run("child_cpp_program", "cpp-smoke-ok");
}
