//! What the build gives cargo: link lines, paths for dependents, bindgen's bindings.

use super::*;

/// Link order: XNNPACK, microkernels, pthreadpool, cpuinfo, then the C runtime pieces.
pub(crate) fn link(install: &Install) {
    println!(
        "cargo:rustc-link-search=native={}",
        install.lib_dir.display()
    );
    for lib in &install.libs {
        println!("cargo:rustc-link-lib=static={lib}");
    }
    if install.cxx {
        println!("cargo:rustc-link-lib=stdc++");
    }
    println!("cargo:rustc-link-lib=m");
    println!("cargo:rustc-link-lib=pthread");
}

/// Paths for dependents: `DEP_XNNPACK_*` in their build scripts, and constants in lib.rs.
pub(crate) fn export_paths(install: &Install) {
    let libs = install.libs.join(",");
    println!("cargo:include={}", install.include.display());
    println!(
        "cargo:include_pthreadpool={}",
        install.include_pthreadpool.display()
    );
    println!("cargo:lib_dir={}", install.lib_dir.display());
    println!("cargo:libs={libs}");
    println!("cargo:cxx={}", install.cxx as u8);
    println!(
        "cargo:rustc-env=XNNPACK_SYS_INCLUDE_DIR={}",
        install.include.display()
    );
    println!(
        "cargo:rustc-env=XNNPACK_SYS_PTHREADPOOL_INCLUDE_DIR={}",
        install.include_pthreadpool.display()
    );
    println!(
        "cargo:rustc-env=XNNPACK_SYS_LIB_DIR={}",
        install.lib_dir.display()
    );
    println!("cargo:rustc-env=XNNPACK_SYS_LIBS={libs}");
    println!("cargo:rustc-env=XNNPACK_SYS_LINK_CXX={}", install.cxx as u8);
}

pub(crate) fn generate_bindings(install: &Install) {
    let header = install.include.join("xnnpack.h");
    let text = fs::read_to_string(&header)
        .unwrap_or_else(|e| panic!("xnnpack-sys: cannot read {}: {e}", header.display()));
    // Older XNNPACK lacks the build identifier; let tests know.
    if text.contains("xnn_experimental_get_build_identifier_size") {
        println!("cargo:rustc-cfg=xnnpack_has_build_identifier");
    }
    let bindings = bindgen::Builder::default()
        .header(header.to_string_lossy())
        .clang_arg(format!("-I{}", install.include.display()))
        .clang_arg(format!("-I{}", install.include_pthreadpool.display()))
        .allowlist_function("xnn_.*")
        .allowlist_type("xnn_.*")
        .allowlist_var("xnn_.*")
        .allowlist_var("XNN_.*")
        .allowlist_function("pthreadpool_.*")
        .allowlist_type("pthreadpool_.*")
        .allowlist_var("PTHREADPOOL_.*")
        // Enums become a type alias plus constants named as in C (xnn_status_success).
        .default_enum_style(bindgen::EnumVariation::Consts)
        .prepend_enum_name(false)
        .derive_default(true)
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()))
        .generate()
        .unwrap_or_else(|e| panic!("xnnpack-sys: bindgen failed on {}: {e}", header.display()));
    let out = out_dir().join("bindings.rs");
    bindings
        .write_to_file(&out)
        .unwrap_or_else(|e| panic!("xnnpack-sys: cannot write {}: {e}", out.display()));
}
