#!/usr/bin/env bash
# The release build for apps, shared by scripts/footprint.sh and
# scripts/package-mobile.sh (source it, then call mobile_build TARGET):
# libxnncache.a for TARGET with cargo's `mobile` profile (Cargo.toml: opt-level
# "z", LTO, one codegen unit, no debug info, panics unwind), and the standard
# library rebuilt from source (-Zbuild-std, Debian's rustc-web and
# rust-web-src, RUSTC_BOOTSTRAP=1) with only the features an app needs:
#   panic-unwind       every extern "C" function catches panics (catch_unwind)
#   optimize_for_size  std's and core's smaller algorithms
# and without `backtrace` (the symbolizer: gimli, addr2line, miniz_oxide,
# rustc_demangle). -Zlocation-detail=none drops the file/line strings of
# panic locations and -Zfmt-debug=none the bodies of `Debug` formatting
# (xnncache's messages use Display only). -Cforce-frame-pointers=yes makes
# x86-64's unwind tables smaller than its code grows (one CFA rule per
# function instead of one per push), and -Cforce-unwind-tables=no drops the
# tables of functions that cannot unwind: LLVM still emits one for every
# function a panic can pass through, so catch_unwind works as before, and
# frame pointers keep stack traces (debuggerd, simpleperf) complete.
# Static archives need no linker, so
# no NDK or Xcode is needed to build them.
#
# Build directory: <build cache>/cargo/mobile (kept between runs, so the
# standard library is built once per target).

mobile_setup() {
    bash "$(dirname "${BASH_SOURCE[0]}")/install-platform-deps.sh" toolchain
    # Debian's toolchain, not a rustup one that may come first on PATH.
    export PATH="/usr/bin:$PATH" RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc
    unset RUSTUP_TOOLCHAIN RUSTC_WRAPPER RUSTC_WORKSPACE_WRAPPER
    local build_cache="${XNNCACHE_BUILD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/xnncache}"
    export RUSTC_BOOTSTRAP=1 CARGO_TARGET_DIR="$build_cache/cargo/mobile"
    # The oldest iOS the archives are built for (LC_BUILD_VERSION's minos).
    export IPHONEOS_DEPLOYMENT_TARGET=14.0
    MOBILE_RUSTFLAGS="-Zlocation-detail=none -Zfmt-debug=none -Cforce-frame-pointers=yes -Cforce-unwind-tables=no"
}

# mobile_build TARGET: builds, prints the archive's path.
mobile_build() {
    local target=$1 start=$SECONDS
    RUSTFLAGS="$MOBILE_RUSTFLAGS" nice -n 10 /usr/bin/cargo rustc -q -p xnncache --lib --crate-type staticlib \
        --profile mobile --target "$target" \
        -Zbuild-std=std,panic_unwind -Zbuild-std-features=panic-unwind,optimize_for_size >&2
    echo "mobile-build: $target built ($((SECONDS - start)) s)" >&2
    echo "$CARGO_TARGET_DIR/$target/mobile/libxnncache.a"
}
