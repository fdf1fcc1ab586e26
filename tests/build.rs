//! Compiles the C and C++ test programs against include/xnncache.h with the
//! `cc` crate. Each program's `main` is renamed so that a test can run it in a
//! child process of the test binary, linked with xnncache and XNNPACK.

fn main() {
    println!("cargo:rerun-if-changed=c");
    println!("cargo:rerun-if-changed=cpp");
    println!("cargo:rerun-if-changed=../include/xnncache.h");
    // xnncache's build script hands over the header it just generated, equal
    // to the committed include/xnncache.h (a unit test checks that).
    let header_dir = std::env::var_os("DEP_XNNCACHE_INCLUDE").map_or_else(|| "../include".into(), std::path::PathBuf::from);
    let mut includes = vec![header_dir];
    for var in ["DEP_XNNPACK_INCLUDE", "DEP_XNNPACK_INCLUDE_PTHREADPOOL"] {
        if let Some(dir) = std::env::var_os(var) {
            includes.push(dir.into());
        }
    }
    cc::Build::new()
        .file("c/smoke.c")
        .includes(&includes)
        .define("main", "xnncache_c_smoke_main")
        .flag("-std=c11")
        .warnings(true)
        .extra_warnings(true)
        .warnings_into_errors(true)
        .compile("xnncache_c_smoke");
    cc::Build::new()
        .cpp(true)
        .file("cpp/smoke.cpp")
        .includes(&includes)
        .define("main", "xnncache_cpp_smoke_main")
        .flag("-std=c++17")
        .flag("-include")
        .flag("cpp/entry.h")
        .warnings(true)
        .extra_warnings(true)
        .warnings_into_errors(true)
        .compile("xnncache_cpp_smoke");
}
