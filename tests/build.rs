//! Compiles the C and C++ test programs against include/xnncache.h with the
//! `cc` crate. Each program's `main` is renamed so that a test can run it in a
//! child process of the test binary, linked with xnncache and XNNPACK.

fn main() {
    xnnpack_features();
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
    // For the test that compiles the header beside the system's headers.
    let joined = std::env::join_paths(&includes).expect("include folders have no separator in them");
    println!("cargo:rustc-env=XNNCACHE_TEST_INCLUDES={}", joined.to_string_lossy());
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

/// What the linked XNNPACK's header declares, as cfgs for the tests:
/// `xnnpack_alias_data` (the v3 provider slot, and the fp16/bf16-to-fp32
/// fallback that calls it), `xnnpack_fingerprint` (the v2 key field) and
/// `xnnpack_cube_root` (an op without fp16 kernels, which forces that fallback).
fn xnnpack_features() {
    println!("cargo::rustc-check-cfg=cfg(xnnpack_alias_data)");
    println!("cargo::rustc-check-cfg=cfg(xnnpack_cube_root)");
    println!("cargo::rustc-check-cfg=cfg(xnnpack_fingerprint)");
    let Some(dir) = std::env::var_os("DEP_XNNPACK_INCLUDE") else { return };
    let header = std::path::Path::new(&dir).join("xnnpack.h");
    println!("cargo:rerun-if-changed={}", header.display());
    let text = std::fs::read_to_string(&header).unwrap_or_default();
    if text.contains("(*alias_data)") {
        println!("cargo:rustc-cfg=xnnpack_alias_data");
    }
    if text.contains("fingerprint_id;") {
        println!("cargo:rustc-cfg=xnnpack_fingerprint");
    }
    if text.contains("xnn_unary_cube_root") {
        println!("cargo:rustc-cfg=xnnpack_cube_root");
    }
}
