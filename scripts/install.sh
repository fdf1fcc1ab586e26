#!/usr/bin/env bash
# Builds xnncache in release and installs it under PREFIX:
#
#   PREFIX/include/xnncache.h
#   PREFIX/lib/libxnncache.a
#   PREFIX/lib/libxnncache.so.0.1.0, libxnncache.so.0 -> it (the soname), libxnncache.so -> .so.0
#   PREFIX/lib/cmake/xnncache/{xnncacheConfig,xnncacheConfigVersion,xnncacheTargets}.cmake
#   PREFIX/lib/pkgconfig/{xnncache,xnncache-static}.pc
#   PREFIX/bin/xnncache                 (the command-line tool: inspect, verify, compact)
#
# Usage: bash scripts/install.sh PREFIX
# Neither xnncache nor the tool needs XNNPACK to build; the installed CMake
# package and pkg-config files say how a consumer points at one
# (cmake/README.md). CARGO_TARGET_DIR is honoured (scripts/pin-env.sh).
set -euo pipefail
if [[ $# -ne 1 || "$1" == -* ]]; then
    echo "usage: bash scripts/install.sh PREFIX" >&2
    exit 2
fi
# PREFIX is relative to where the script was called from.
mkdir -p "$1"
prefix="$(cd "$1" && pwd)"
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/pin-env.sh

version="$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n1)"
major="${version%%.*}"
target_dir="${CARGO_TARGET_DIR:-$(pwd)/target}"
release="$target_dir/release"

# One build of the library (rlib, cdylib, staticlib) that also prints what
# the static archive needs from the system; then the tool.
log="$(mktemp)"
trap 'rm -f "$log" "$log.cmake"' EXIT
nice -n 10 cargo rustc --release -p xnncache --lib -- --print native-static-libs 2>&1 | tee "$log" >&2
native="$(sed -n 's/.*native-static-libs: //p' "$log" | tail -n1)"
if [[ -z "$native" ]]; then
    # Cargo printed nothing new (the library was fresh): the list rustc
    # gives for a Linux GNU target.
    native="-lgcc_s -lutil -lrt -lpthread -lm -ldl -lc"
fi
nice -n 10 cargo build --release -p xnncache-cli >&2

# -lc is implied by every C and C++ link; -lgcc_s too, but harmless. The CMake
# target gets bare names, pkg-config the flags.
native_flags="$(echo "$native" | tr ' ' '\n' | grep -v '^-lc$' | tr '\n' ' ' | sed 's/ *$//')"
native_names="$(echo "$native_flags" | tr ' ' '\n' | sed -n 's/^-l//p' | tr '\n' ';' | sed 's/;$//')"

install -d "$prefix/include" "$prefix/lib/cmake/xnncache" "$prefix/lib/pkgconfig" "$prefix/bin"
install -m 0644 include/xnncache.h "$prefix/include/xnncache.h"
install -m 0644 "$release/libxnncache.a" "$prefix/lib/libxnncache.a"
install -m 0755 "$release/libxnncache.so" "$prefix/lib/libxnncache.so.$version"
ln -sfn "libxnncache.so.$version" "$prefix/lib/libxnncache.so.$major"
ln -sfn "libxnncache.so.$major" "$prefix/lib/libxnncache.so"
install -m 0755 "$release/xnncache" "$prefix/bin/xnncache"

subst() {
    sed -e "s|@VERSION@|$version|g" -e "s|@MAJOR@|$major|g" -e "s|@PREFIX@|$prefix|g" \
        -e "s|@NATIVE_LIBS@|$native_names|g" -e "s|@NATIVE_LIBS_FLAGS@|$native_flags|g" "$1" >"$2"
}
subst cmake/xnncacheConfig.cmake.in "$prefix/lib/cmake/xnncache/xnncacheConfig.cmake"
subst cmake/xnncacheTargets.cmake.in "$prefix/lib/cmake/xnncache/xnncacheTargets.cmake"
subst cmake/xnncache.pc.in "$prefix/lib/pkgconfig/xnncache.pc"
subst cmake/xnncache-static.pc.in "$prefix/lib/pkgconfig/xnncache-static.pc"

# 0.x releases break at the minor version: 0.1.* satisfies find_package(xnncache 0.1).
bits=$(($(getconf LONG_BIT) / 8))
cat >"$log.cmake" <<'EOF'
include(CMakePackageConfigHelpers)
write_basic_package_version_file("${OUT}" VERSION "${VERSION}" COMPATIBILITY SameMinorVersion)
EOF
cmake -DCMAKE_SIZEOF_VOID_P="$bits" -DOUT="$prefix/lib/cmake/xnncache/xnncacheConfigVersion.cmake" -DVERSION="$version" -P "$log.cmake"

echo "install.sh: xnncache $version installed in $prefix (static archive needs: $native_flags)"
