#!/usr/bin/env bash
# Installs, from Debian, what the cross-platform checks and runs need, each
# only when missing (and `apt-get update` only when something is):
#   toolchain  rustc-web, cargo-web, rust-web-src, rust-web-clippy: a rustc
#              with the matching standard-library source, so that
#              -Zbuild-std can build std for targets rustup would have to
#              download (no download but the package registries here)
#   i686       gcc-i686-linux-gnu, libc6-dev-i386-cross: link and run
#              32-bit tests (with the cross tree's loader) (gcc-multilib would conflict with the aarch64
#              cross compiler)
#   aarch64    gcc-aarch64-linux-gnu, libc6-dev-arm64-cross, qemu-user
#   windows    gcc-mingw-w64-x86-64, wine64
#   arm64-xnnpack  g++-aarch64-linux-gnu, cmake, ninja-build: cross-build
#              XNNPACK and the C++ test programs for the integration tests
#              under qemu (scripts/test-arm64.sh)
# Usage: install-platform-deps.sh [toolchain] [i686] [aarch64] [windows] [arm64-xnnpack]
# (no argument: the first four).
set -euo pipefail

groups=("$@")
[[ ${#groups[@]} -gt 0 ]] || groups=(toolchain i686 aarch64 windows)

want=()
for g in "${groups[@]}"; do
    case "$g" in
        toolchain) want+=(rustc-web cargo-web rust-web-src rust-web-clippy) ;;
        i686) want+=(gcc-i686-linux-gnu libc6-dev-i386-cross) ;;
        aarch64) want+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user) ;;
        windows) want+=(gcc-mingw-w64-x86-64 wine64) ;;
        arm64-xnnpack) want+=(g++-aarch64-linux-gnu cmake ninja-build) ;;
        *) echo "install-platform-deps: unknown group $g" >&2; exit 2 ;;
    esac
done

missing=()
for p in "${want[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [[ ${#missing[@]} -eq 0 ]]; then
    echo "install-platform-deps: present: ${want[*]}"
    exit 0
fi
echo "install-platform-deps: installing ${missing[*]}"
SUDO=
[[ $(id -u) -eq 0 ]] || SUDO=sudo
# An old or empty package list finds nothing: refresh it first.
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install-platform-deps: done"
