//! A user's own built XNNPACK (XNNPACK_LIB_DIR and XNNPACK_INCLUDE_DIR).

use super::*;

/// Uses libraries from XNNPACK_LIB_DIR (searched a few levels deep, as in a
/// cmake build tree) and headers from XNNPACK_INCLUDE_DIR (a `:`-separated list).
pub(crate) fn prebuilt(lib_dir: &Path, include: &str) -> Install {
    // Gather them in one folder (symlinks), so dependents get a single LIB_DIR.
    let flat = out_dir().join("xnnpack-lib");
    let _ = fs::remove_dir_all(&flat);
    fs::create_dir_all(&flat).expect("OUT_DIR is writable");
    let libs = gather_libs(lib_dir, &format!("XNNPACK_LIB_DIR={}", lib_dir.display()), &mut |from, file| {
        println!("cargo:rerun-if-changed={}", from.display());
        std::os::unix::fs::symlink(from, flat.join(file)).expect("OUT_DIR is writable");
    });
    let dirs: Vec<PathBuf> = env::split_paths(include).map(|p| absolute(&p)).collect();
    let holding = |header: &str| {
        dirs.iter().find(|d| d.join(header).is_file()).cloned().unwrap_or_else(|| {
            panic!("xnnpack-sys: no folder in XNNPACK_INCLUDE_DIR={include} holds {header} (list several folders with ':')")
        })
    };
    let lib_files: Vec<PathBuf> = libs
        .iter()
        .map(|l| flat.join(format!("lib{l}.a")))
        .collect();
    Install {
        lib_dir: flat,
        cxx: needs_cxx(&lib_files),
        libs,
        include: holding("xnnpack.h"),
        include_pthreadpool: holding("pthreadpool.h"),
    }
}
