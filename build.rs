//! Generates include/xnncache.h from the C API with cbindgen.
//!
//! The header is committed. Outside CI the build refreshes it in place; in CI
//! (`CI` set) it only writes `$OUT_DIR/xnncache.h`, and a unit test fails when
//! the committed header differs, so a drifted header cannot land.

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    println!("cargo:rerun-if-env-changed=CI");
    soname();
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("xnncache.h");
    let config = cbindgen::Config::from_file(root.join("cbindgen.toml")).expect("cbindgen.toml is valid");
    let bindings = cbindgen::Builder::new()
        .with_config(config)
        .with_src(root.join("src/lib.rs"))
        .generate()
        .expect("cbindgen can generate include/xnncache.h");
    bindings.write_to_file(&out);
    untypedef_stats(&out);
    // The C and C++ test programs compile against this copy, which is
    // always current; the drift test keeps include/ equal to it.
    println!("cargo:include={}", out.parent().expect("OUT_DIR").display());
    if std::env::var_os("CI").is_none() {
        let committed = root.join("include/xnncache.h");
        let fresh = std::fs::read(&out).expect("the header was just written");
        if std::fs::read(&committed).ok().as_deref() != Some(fresh.as_slice()) {
            std::fs::write(&committed, fresh).expect("include/ is writable");
        }
    }
}

/// C has one namespace for functions and typedefs, and the API has both a
/// function `xnncache_stats` and its struct; so the struct is declared by tag
/// only (`struct xnncache_stats`), which cbindgen cannot do for one item.
fn untypedef_stats(header: &std::path::Path) {
    let text = std::fs::read_to_string(header).expect("the header was just written");
    let fixed = text
        .replacen("typedef struct xnncache_stats {", "struct xnncache_stats {", 1)
        .replacen("} xnncache_stats;", "};", 1);
    assert!(fixed.len() + 23 == text.len(), "cbindgen's output changed shape around xnncache_stats");
    std::fs::write(header, fixed).expect("OUT_DIR is writable");
}

/// The shared library's soname, `libxnncache.so.<major>`: programs linked
/// against the installed `libxnncache.so` record it and load
/// `libxnncache.so.0` (a link to `libxnncache.so.0.1.0`, see
/// scripts/install.sh), so an incompatible release can be installed beside
/// them. ELF targets only. Loading cargo's own `target/*/libxnncache.so` by
/// path (dlopen) is unchanged; a program linked against it needs a
/// `libxnncache.so.0` beside it, which is what the install provides.
fn soname() {
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if matches!(os.as_str(), "linux" | "android" | "freebsd" | "netbsd" | "openbsd" | "dragonfly") {
        let major = std::env::var("CARGO_PKG_VERSION_MAJOR").expect("cargo sets CARGO_PKG_VERSION_MAJOR");
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libxnncache.so.{major}");
    }
}
