#!/usr/bin/env bash
# The release build for apps, shared by scripts/footprint.sh and
# scripts/package-mobile.sh (source it, call mobile_setup, then
# mobile_build TARGET): libxnncache.a for TARGET with cargo's `mobile`
# profile (Cargo.toml: opt-level "z", LTO, one codegen unit, no debug info,
# a panic aborts), and the standard library rebuilt from source
# (-Zbuild-std, Debian's rustc-web and rust-web-src, RUSTC_BOOTSTRAP=1) with
# only what an app needs: `optimize_for_size` (std's and core's smaller
# algorithms) and no `backtrace` (the symbolizer: gimli, addr2line,
# miniz_oxide, rustc_demangle; 175 KB of the first measurement).
#
# Flags (MOBILE_RUSTFLAGS):
#   -Zlocation-detail=none  no file/line strings for panic locations
#   -Zfmt-debug=none        no bodies for `Debug` formatting (xnncache's
#                           messages use Display only)
#   -Cforce-unwind-tables=no  no unwind tables for functions that cannot
#                           unwind: with panics aborting, that is all of
#                           them (40 KB on x86-64)
#   -Cforce-frame-pointers=yes  so that a crash report or a profiler
#                           (debuggerd, simpleperf, Instruments) can still
#                           walk the stack through xnncache without tables
#
# XNNCACHE_MOBILE_PANIC=unwind builds the `mobile-unwind` profile instead: a
# panic is caught at the C boundary and returned as XNNCACHE_INTERNAL_ERROR,
# as in every other build, for 72 to 84 KB more in an app (LLVM still emits
# an unwind table for every function a panic can pass through, so the flags
# above stay sound; the frame pointers make x86-64's tables smaller).
#
# Static archives need no linker: no NDK or Xcode is needed to build them.
# Build directory: <build cache>/cargo/mobile (kept between runs, so the
# standard library is built once per target and panic strategy).

mobile_setup() {
    bash "$(dirname "${BASH_SOURCE[0]}")/install-platform-deps.sh" toolchain
    # Debian's toolchain, not a rustup one that may come first on PATH.
    export PATH="/usr/bin:$PATH" RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc
    unset RUSTUP_TOOLCHAIN RUSTC_WRAPPER RUSTC_WORKSPACE_WRAPPER
    local build_cache="${XNNCACHE_BUILD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/xnncache}"
    export RUSTC_BOOTSTRAP=1 CARGO_TARGET_DIR="$build_cache/cargo/mobile"
    # The oldest iOS the archives are built for (LC_BUILD_VERSION's minos;
    # ExecuTorch's iOS presets target 17.0).
    export IPHONEOS_DEPLOYMENT_TARGET=14.0
    MOBILE_RUSTFLAGS="-Zlocation-detail=none -Zfmt-debug=none -Cforce-frame-pointers=yes -Cforce-unwind-tables=no"
    case "${XNNCACHE_MOBILE_PANIC:-abort}" in
        abort) MOBILE_PROFILE=mobile MOBILE_STD=std,panic_abort MOBILE_STD_FEATURES=optimize_for_size ;;
        unwind) MOBILE_PROFILE=mobile-unwind MOBILE_STD=std,panic_unwind MOBILE_STD_FEATURES=panic-unwind,optimize_for_size ;;
        *) echo "mobile-build: XNNCACHE_MOBILE_PANIC is abort or unwind" >&2; return 2 ;;
    esac
}

# mobile_build TARGET: builds, prints the archive's path.
mobile_build() {
    local target=$1 start=$SECONDS
    RUSTFLAGS="$MOBILE_RUSTFLAGS" nice -n 10 /usr/bin/cargo rustc -q -p xnncache --lib --crate-type staticlib \
        --profile "$MOBILE_PROFILE" --target "$target" \
        -Zbuild-std="$MOBILE_STD" -Zbuild-std-features="$MOBILE_STD_FEATURES" >&2
    echo "mobile-build: $target ($MOBILE_PROFILE) built ($((SECONDS - start)) s)" >&2
    echo "$CARGO_TARGET_DIR/$target/$MOBILE_PROFILE/libxnncache.a"
}
