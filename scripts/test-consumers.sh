#!/usr/bin/env bash
# Installs xnncache into a temporary prefix (scripts/install.sh) and builds
# and runs consumers of it the way users would, each twice on one cache file
# (cold, then warm: nothing packed), each printing PASS:
#
#   1. tests/consumer (C++, find_package) with cmake: static (the default),
#      shared (XNNCACHE_SHARED=ON), shared (COMPONENTS shared), and static
#      with the project's own XNNPACK target; and find_package(xnncache 0.2)
#      must fail;
#   2. tests/consumer/pkgconfig.c (C) with pkg-config only: shared
#      (xnncache.pc) and static (xnncache-static.pc);
#   3. the installed command-line tool on the file the consumers made.
#
# XNNPACK is the one the Rust build uses (XNNCACHE_XNNPACK picks the pin, as
# for scripts/test.sh): its paths are read from xnnpack-sys's build-script
# output in the target folder (built here if missing; cached outside the work
# tree either way). Exits non-zero on the first failure.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/pin-env.sh
started=$SECONDS
target_dir="${CARGO_TARGET_DIR:-$(pwd)/target}"

# --- Where the Rust build's XNNPACK is ---------------------------------------
xnnpack_output() {
    # The newest xnnpack-sys build-script run of any profile that built XNNPACK.
    local f
    for f in $(ls -t "$target_dir"/*/build/xnnpack-sys-*/output 2>/dev/null || true); do
        if grep -q '^cargo:lib_dir=' "$f"; then
            echo "$f"
            return
        fi
    done
}
out="$(xnnpack_output)"
if [[ -z "$out" ]]; then
    echo "test-consumers.sh: no XNNPACK build in $target_dir yet; building xnnpack-sys (reuses the cached XNNPACK)"
    bash scripts/install-deps.sh
    nice -n 10 cargo build -p xnnpack-sys
    out="$(xnnpack_output)"
fi
[[ -n "$out" ]] || { echo "test-consumers.sh: xnnpack-sys did not report where XNNPACK is" >&2; exit 1; }
meta() { sed -n "s/^cargo:$1=//p" "$out" | tail -n1; }
xnn_lib_dir="$(meta lib_dir)"
xnn_include="$(meta include)"
xnn_include_pthreadpool="$(meta include_pthreadpool)"
xnn_libs="$(meta libs)"
xnn_cxx="$(meta cxx)"
xnn_root="$(dirname "$xnn_lib_dir")"
echo "test-consumers.sh: XNNPACK ${XNNCACHE_XNNPACK:-4ea82e5} from $xnn_root ($xnn_libs)"
if [[ ! -f "$xnn_root/include/xnnpack.h" ]]; then
    echo "test-consumers.sh: $xnn_root is not an XNNPACK prefix (include/xnnpack.h, lib/)" >&2
    exit 1
fi

# --- Install into a temporary prefix ----------------------------------------
work="$(mktemp -d "${TMPDIR:-/tmp}/xnncache-consumers.XXXXXX")"
trap 'rm -rf "$work"' EXIT
prefix="$work/prefix"
bash scripts/install.sh "$prefix"
for f in include/xnncache.h lib/libxnncache.a lib/libxnncache.so lib/libxnncache.so.0 lib/cmake/xnncache/xnncacheConfig.cmake \
    lib/cmake/xnncache/xnncacheConfigVersion.cmake lib/cmake/xnncache/xnncacheTargets.cmake lib/pkgconfig/xnncache.pc bin/xnncache; do
    [[ -e "$prefix/$f" ]] || { echo "test-consumers.sh: $f was not installed" >&2; exit 1; }
done
soname="$(readelf -d "$prefix/lib/libxnncache.so" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')"
[[ "$soname" == libxnncache.so.0 ]] || { echo "test-consumers.sh: soname is '$soname', not libxnncache.so.0" >&2; exit 1; }

# Runs a consumer twice on a new cache file: cold, then warm; both must PASS.
cold_and_warm() {
    local name="$1" exe="$2" file="$work/$1.xnncache" log
    for run in cold warm; do
        log="$("$exe" "$file")" || { echo "$log"; echo "test-consumers.sh: $name ($run) failed" >&2; exit 1; }
        echo "$log"
        grep -q "$run run" <<<"$log" && grep -q '^PASS$' <<<"$log" || { echo "test-consumers.sh: $name: expected a $run run and PASS" >&2; exit 1; }
    done
}

# Checks what the executable loads: the shared library by its soname, or nothing of xnncache.
check_linkage() {
    local exe="$1" kind="$2" needed
    needed="$(readelf -d "$exe" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | tr '\n' ' ')"
    if [[ "$kind" == shared ]]; then
        [[ " $needed" == *" libxnncache.so.0 "* ]] || { echo "test-consumers.sh: $exe does not load libxnncache.so.0 (needs: $needed)" >&2; exit 1; }
    else
        [[ " $needed" != *"libxnncache"* ]] || { echo "test-consumers.sh: $exe loads libxnncache (needs: $needed), expected the archive" >&2; exit 1; }
    fi
}

# --- 1. CMake ----------------------------------------------------------------
cmake_consumer() {
    local name="$1" kind="$2"
    shift 2
    local build="$work/build-$name"
    echo "== cmake consumer: $name"
    nice -n 10 cmake -S tests/consumer -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$prefix" "$@" >"$work/$name.configure.log" ||
        { cat "$work/$name.configure.log"; exit 1; }
    grep 'xnncache 0' "$work/$name.configure.log" || true
    nice -n 10 cmake --build "$build" >"$work/$name.build.log" 2>&1 || { cat "$work/$name.build.log"; exit 1; }
    [[ "$(cat "$build/xnncache-kind.txt")" == "$kind" ]] || { echo "test-consumers.sh: $name linked $(cat "$build/xnncache-kind.txt"), expected $kind" >&2; exit 1; }
    check_linkage "$build/app" "$kind"
    cold_and_warm "cmake-$name" "$build/app"
}
cmake_consumer static static -DXNNCACHE_XNNPACK_ROOT="$xnn_root"
cmake_consumer shared shared -DXNNCACHE_XNNPACK_ROOT="$xnn_root" -DXNNCACHE_SHARED=ON
cmake_consumer component-shared shared -DXNNCACHE_XNNPACK_ROOT="$xnn_root" -DCONSUMER_COMPONENTS=shared
cmake_consumer own-xnnpack-target static -DCONSUMER_OWN_XNNPACK="$xnn_root"
# A version this install does not satisfy is refused.
mkdir -p "$work/too-new"
printf 'cmake_minimum_required(VERSION 3.16)\nproject(too_new LANGUAGES C)\nfind_package(xnncache 0.2 CONFIG REQUIRED)\n' >"$work/too-new/CMakeLists.txt"
if cmake -S "$work/too-new" -B "$work/too-new/build" -DCMAKE_PREFIX_PATH="$prefix" >"$work/too-new.log" 2>&1; then
    echo "test-consumers.sh: find_package(xnncache 0.2) accepted 0.1" >&2
    exit 1
fi

# --- 2. pkg-config -----------------------------------------------------------
echo "== pkg-config consumer"
export PKG_CONFIG_PATH="$prefix/lib/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
pkg-config --exists 'xnncache >= 0.1' || { echo "test-consumers.sh: pkg-config does not find xnncache >= 0.1" >&2; exit 1; }
echo "pkg-config --cflags --libs xnncache:          $(pkg-config --cflags --libs xnncache)"
echo "pkg-config --static --libs xnncache:          $(pkg-config --static --libs xnncache)"
echo "pkg-config --cflags --libs xnncache-static:   $(pkg-config --cflags --libs xnncache-static)"
[[ "$(pkg-config --static --libs xnncache)" == *-lpthread* ]] || { echo "test-consumers.sh: Libs.private is missing" >&2; exit 1; }
# XNNPACK's own flags: pkg-config knows nothing about it (cmake/README.md).
xnn_cflags=(-I"$xnn_include" -I"$xnn_include_pthreadpool")
xnn_ldflags=()
IFS=, read -ra names <<<"$xnn_libs"
for n in "${names[@]}"; do xnn_ldflags+=("$xnn_lib_dir/lib$n.a"); done
[[ "$xnn_cxx" == 1 ]] && xnn_ldflags+=(-lstdc++)
xnn_ldflags+=(-lpthread -lm)
cc="${CC:-cc}"
# shellcheck disable=SC2046 # pkg-config's output is a list of flags
nice -n 10 "$cc" -std=c11 -O1 -Wall -Wextra -Werror tests/consumer/pkgconfig.c -o "$work/c-shared" \
    "${xnn_cflags[@]}" $(pkg-config --cflags --libs xnncache) "${xnn_ldflags[@]}" -Wl,-rpath,"$(pkg-config --variable=libdir xnncache)"
check_linkage "$work/c-shared" shared
cold_and_warm pkgconfig-shared "$work/c-shared"
# shellcheck disable=SC2046
nice -n 10 "$cc" -std=c11 -O1 -Wall -Wextra -Werror tests/consumer/pkgconfig.c -o "$work/c-static" \
    "${xnn_cflags[@]}" $(pkg-config --cflags --libs xnncache-static) "${xnn_ldflags[@]}"
check_linkage "$work/c-static" static
cold_and_warm pkgconfig-static "$work/c-static"

# --- 3. The installed tool on a file a consumer made --------------------------
echo "== bin/xnncache"
"$prefix/bin/xnncache" inspect "$work/cmake-static.xnncache"
"$prefix/bin/xnncache" verify "$work/cmake-static.xnncache"
report="$("$prefix/bin/xnncache" inspect --json "$work/pkgconfig-static.xnncache")"
grep -q '"cpu_identity_matches": true' <<<"$report" || { echo "$report"; echo "test-consumers.sh: bin/xnncache inspect --json" >&2; exit 1; }

echo "test-consumers.sh: PASS (cmake static, shared, own XNNPACK target; pkg-config shared, static; bin/xnncache) in $((SECONDS - started)) s"
