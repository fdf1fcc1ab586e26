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

/// The system headers a host is likely to include beside ours, in C and in
/// C++ (where `<climits>` and friends are the same macros).
const SYSTEM_HEADERS: [&str; 8] = ["limits.h", "stdio.h", "stdlib.h", "string.h", "stdint.h", "errno.h", "fcntl.h", "unistd.h"];

/// A host includes `xnncache.h` before or after the common system headers,
/// from C or C++, with warnings as errors: neither order may redefine a
/// system macro (`NAME_MAX` from `<limits.h>` did) or warn.
#[test]
fn the_header_compiles_beside_system_headers() {
    let dir = TempDir::new("header-order");
    let includes: Vec<std::path::PathBuf> = std::env::split_paths(env!("XNNCACHE_TEST_INCLUDES")).collect();
    // As a POSIX host compiles: `<limits.h>` then defines NAME_MAX and PATH_MAX.
    let system: String = SYSTEM_HEADERS.iter().map(|h| format!("#include <{h}>\n")).collect();
    let ours = "#include \"xnncache.h\"\n";
    let posix = "#ifndef _GNU_SOURCE\n#define _GNU_SOURCE\n#endif\n"; // g++ defines it already
    // Uses a system macro and ours, so that a clash changes the program.
    let body = "int header_order_check(void);\nint header_order_check(void) { return (int) NAME_MAX + (int) XNNCACHE_FLAG_READ_ONLY; }\n";
    for (compiler, extension, standard) in [("cc", "c", "-std=c11"), ("c++", "cpp", "-std=c++17")] {
        let compiler = std::env::var(if extension == "c" { "CC" } else { "CXX" }).unwrap_or_else(|_| compiler.to_owned());
        for (order, text) in [("after", format!("{posix}{system}{ours}{body}")), ("before", format!("{posix}{ours}{system}{body}"))] {
            let source = dir.file(&format!("{order}.{extension}"));
            std::fs::write(&source, text).unwrap();
            let mut command = std::process::Command::new(&compiler);
            command.args([standard, "-Wall", "-Wextra", "-Werror", "-fsyntax-only"]);
            for include in &includes {
                command.arg("-I").arg(include);
            }
            let out = command.arg(&source).output().unwrap_or_else(|e| panic!("cannot run {compiler}: {e}"));
            assert!(
                out.status.success(),
                "{compiler}: xnncache.h included {order} the system headers does not compile cleanly:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

#[test]
#[ignore = "run in a child process by structs_at_any_address_are_read_and_written_as_copies"]
fn child_misaligned_structs() {
    use xnncache::capi::{xnncache_close, xnncache_open, xnncache_options, xnncache_stats};
    // A C host may keep the options, and the variables it passes for
    // results, inside packed structs: at odd addresses.
    let options = xnncache_tests::options(None);
    let mut buffer = vec![0u8; std::mem::size_of::<xnncache_options>() + 64];
    let at = buffer.as_mut_ptr().wrapping_add(1);
    // SAFETY: the buffer holds the options' bytes from `at` on.
    unsafe { (at as *mut xnncache_options).write_unaligned(options) };
    let mut out = vec![0u8; 64];
    let cache_out = out.as_mut_ptr().wrapping_add(3) as *mut *mut xnncache::capi::xnncache;
    let status = xnncache_open(at as *const xnncache_options, cache_out);
    assert_eq!(status, xnncache::Status::XNNCACHE_OK, "{}", xnncache_tests::last_error());
    // SAFETY: written by xnncache_open just now.
    let cache = unsafe { cache_out.read_unaligned() };
    let mut stats = vec![0u8; std::mem::size_of::<xnncache::Stats>() + 64];
    let stats_at = stats.as_mut_ptr().wrapping_add(5) as *mut xnncache::Stats;
    assert_eq!(xnncache_stats(cache, stats_at), xnncache::Status::XNNCACHE_OK);
    // SAFETY: written by xnncache_stats just now.
    assert_eq!(unsafe { stats_at.read_unaligned() }.backing, xnncache::Backing::XNNCACHE_BACKING_MEMORY as u32);
    xnncache_close(cache);
    println!("misaligned-ok");
}

/// Options, and the out-pointers for a handle and for stats, at addresses
/// that are not aligned for their types: read and written as copies (a
/// reference to them was undefined behaviour, and a debug build aborted).
#[test]
fn structs_at_any_address_are_read_and_written_as_copies() {
    let out = run_child("child_misaligned_structs", &[], None);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && stdout.contains("misaligned-ok"), "{:?}\n{stdout}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
}
