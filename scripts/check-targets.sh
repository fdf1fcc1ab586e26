#!/usr/bin/env bash
# `cargo check` and `cargo clippy -D warnings` of the core crate (xnncache)
# for every platform XNNPACK's users ship on, with Debian's Rust toolchain
# (rustc-web, cargo-web, rust-web-src, rust-web-clippy) building the
# standard library from source (-Zbuild-std): no per-target download.
#
# Usage: scripts/check-targets.sh [TARGET...]   (default: all of them)
# The build directory is <build cache>/cargo/check-targets (kept between runs).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

targets=("$@")
if [[ ${#targets[@]} -eq 0 ]]; then
    targets=(
        aarch64-apple-ios aarch64-apple-ios-sim x86_64-apple-darwin aarch64-apple-darwin
        aarch64-linux-android armv7-linux-androideabi x86_64-linux-android
        x86_64-pc-windows-msvc aarch64-pc-windows-msvc x86_64-pc-windows-gnu
        i686-unknown-linux-gnu
    )
fi

bash scripts/install-platform-deps.sh toolchain

# Debian's toolchain, not a rustup one that may come first on PATH.
export PATH="/usr/bin:$PATH" RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc
unset RUSTUP_TOOLCHAIN RUSTC_WRAPPER RUSTC_WORKSPACE_WRAPPER
# Outside the work tree, so that a fresh clone (as CI makes) reuses the
# standard library built for each target.
build_cache="${XNNCACHE_BUILD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/xnncache}"
export RUSTC_BOOTSTRAP=1 CARGO_TARGET_DIR="$build_cache/cargo/check-targets"
# Deployment targets that std's own code accepts (rustc's defaults otherwise).
export MACOSX_DEPLOYMENT_TARGET=11.0 IPHONEOS_DEPLOYMENT_TARGET=14.0

failed=()
for t in "${targets[@]}"; do
    start=$SECONDS
    ok=1
    nice -n 10 /usr/bin/cargo check -q -p xnncache --lib --target "$t" -Zbuild-std=std,panic_abort || ok=0
    if [[ $ok -eq 1 ]]; then
        nice -n 10 /usr/bin/cargo clippy -q -p xnncache --lib --target "$t" -Zbuild-std=std,panic_abort -- -D warnings || ok=0
    fi
    if [[ $ok -eq 1 ]]; then
        echo "check-targets: $t: check + clippy ok ($((SECONDS - start)) s)"
    else
        echo "check-targets: $t: FAILED ($((SECONDS - start)) s)"
        failed+=("$t")
    fi
done
if [[ ${#failed[@]} -gt 0 ]]; then
    echo "check-targets: failed: ${failed[*]}"
    exit 1
fi
echo "check-targets: ${#targets[@]} targets checked, 0 failed (${SECONDS} s)"
