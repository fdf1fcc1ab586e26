#!/usr/bin/env bash
# Runs integration tests (the tests crate) on aarch64 under qemu-user, against
# an XNNPACK cross-built for aarch64: its Arm packing paths (other kernels,
# KleidiAI's packing, 16-byte alignment) go through xnncache for real.
#
#   1. cross-builds XNNPACK 4ea82e5 + KleidiAI 382b078 (and cpuinfo,
#      pthreadpool, FXdiv) with Debian's aarch64-linux-gnu gcc/g++ from the
#      tarballs in XNNCACHE_DEPS_DIR (default: ../shared/deps beside the
#      repository), once: cached in <build cache>/arm64-xnnpack-<key>
#      (built in a temporary folder, then renamed);
#   2. builds the tests crate for aarch64-unknown-linux-gnu with Debian's
#      rustc-web and -Zbuild-std (as scripts/test-cross.sh does, same target
#      folder), xnnpack-sys pointed at that build (XNNPACK_LIB_DIR/INCLUDE_DIR);
#   3. runs them with qemu-aarch64. Tests that re-run their own binary
#      (run_child: persistence, ...) need the kernel to exec an aarch64 file:
#      the script gives qemu-aarch64 a binfmt_misc entry (in a user namespace
#      of its own, else on the machine as root), or runs only the others.
#
# Measured on 2 cores shared with another build: XNNPACK 135 s and the tests
# 73 s to build from nothing (the aarch64 std already built by test-cross.sh),
# then 160 s to run (two minutes of it persistence's byte-flipping test,
# which opens a file thousands of times through qemu's mmap emulation); a
# second run is the 160 s alone.
# Usage: scripts/test-arm64.sh [extra cargo test args, e.g. -- --test-threads=1]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo=$(pwd)

# Test files run: every [[test]] of tests/Cargo.toml (XNNCACHE_ARM64_TESTS, a
# space-separated list, picks some instead). memory.rs's figures of the
# process's anonymous memory and RSS include qemu's own (translated code, its
# tables): under qemu (XNNCACHE_UNDER_EMULATOR=1) it checks everything but
# those figures, which need a native arm64 run.
#
# Each run is capped in memory (XNNCACHE_ARM64_MEMORY_LIMIT bytes, default
# 6 GiB, through a memory cgroup): a test that makes qemu grow past it is
# killed and fails, instead of taking the machine (qemu-user tracks every
# reserved guest page; an 8 GiB reservation per open once grew it to
# 16-20 GB). The peak is printed at the end.
#
# With XNNCACHE_REQUIRE_ALL=1 (CI), a missing binfmt_misc entry or memory
# cgroup fails the script; otherwise it says so and runs what it can.
read -r -a TESTS <<<"${XNNCACHE_ARM64_TESTS:-$(awk '/^\[\[test\]\]/{t=1;next} t&&/^name *=/{gsub(/[" ]/,"",$0);sub(/name=/,"");print;t=0}' tests/Cargo.toml | tr '\n' ' ')}"
require_all=${XNNCACHE_REQUIRE_ALL:-0}
missing() {
    if [[ $require_all == 1 ]]; then
        echo "test-arm64: FAILED: $1 (XNNCACHE_REQUIRE_ALL=1)" >&2
        exit 1
    fi
    echo "test-arm64: SKIPPING: $1" >&2
}

bash scripts/install-platform-deps.sh toolchain aarch64 arm64-xnnpack

build_cache="${XNNCACHE_BUILD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/xnncache}"
deps="${XNNCACHE_DEPS_DIR:-$(dirname "$repo")/shared/deps}"
mkdir -p "$build_cache"

# --- 1. XNNPACK for aarch64 -------------------------------------------------
# "file sha256", the sums from xnnpack-sys/sources.txt (written once there).
source_line() { awk -v f="$1" '$1 == f { print $1 " " $2; found = 1 } END { exit !found }' xnnpack-sys/sources.txt; }
tarballs=()
for f in xnnpack_0.0~git20241108.4ea82e5.orig.tar.xz cpuinfo_0.0~git20250905.877328f.orig.tar.xz \
    pthreadpool_0.0~git20240616.560c60d.orig.tar.xz fxdiv_0.0~git20200417.b408327.orig.tar.xz \
    kleidiai-382b07835c43fcb0401cb4dab3c8fb85eaf187b6.tar.xz; do
    tarballs+=("$(source_line "$f")")
done
toolchain_file='set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)
set(CMAKE_ASM_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_FIND_ROOT_PATH /usr/aarch64-linux-gnu)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)'
cmake_flags=(
    -DCMAKE_BUILD_TYPE=Release -DCMAKE_POSITION_INDEPENDENT_CODE=ON
    -DXNNPACK_LIBRARY_TYPE=static -DXNNPACK_BUILD_TESTS=OFF
    -DXNNPACK_BUILD_BENCHMARKS=OFF -DXNNPACK_BUILD_ALL_MICROKERNELS=OFF
    -DXNNPACK_ENABLE_KLEIDIAI=ON
)
key=$({
    echo "test-arm64.sh xnnpack build 1"
    printf '%s\n' "${tarballs[@]}" "$toolchain_file" "${cmake_flags[@]}"
    aarch64-linux-gnu-gcc --version | head -1
    aarch64-linux-gnu-g++ --version | head -1
    cmake --version | head -1
} | sha256sum | cut -c1-16)
xnnpack="$build_cache/arm64-xnnpack-$key"

build_xnnpack() {
    local tmp="$xnnpack.tmp-$$"
    rm -rf "$tmp"
    mkdir -p "$tmp/src" "$tmp/build" "$tmp/out/lib" "$tmp/out/include" "$tmp/out/logs"
    trap 'rm -rf "$tmp"' EXIT
    local line file sum
    for line in "${tarballs[@]}"; do
        read -r file sum <<<"$line"
        [[ -f "$deps/$file" ]] || { echo "test-arm64: $deps/$file is missing (set XNNCACHE_DEPS_DIR to the folder holding it; docs/PLATFORMS.md lists the tarballs)" >&2; exit 1; }
        echo "$sum  $deps/$file" | sha256sum --quiet -c -
    done
    # XNNPACK's tarball has no top folder; the others have one each.
    mkdir -p "$tmp/src/xnnpack"
    tar xf "$deps/${tarballs[0]%% *}" -C "$tmp/src/xnnpack"
    for line in "${tarballs[@]:1}"; do
        tar xf "$deps/${line%% *}" -C "$tmp/src"
    done
    local src="$tmp/src"
    printf '%s\n' "$toolchain_file" >"$tmp/aarch64.cmake"
    echo "test-arm64: cross-building XNNPACK 4ea82e5 for aarch64 into $xnnpack (about 75 s on 2 cores; later runs reuse it)"
    local started=$SECONDS
    (cd "$tmp/build" && nice -n 10 cmake -G Ninja "$src/xnnpack" "${cmake_flags[@]}" \
        -DCMAKE_TOOLCHAIN_FILE="$tmp/aarch64.cmake" \
        -DCPUINFO_SOURCE_DIR="$(echo "$src"/cpuinfo-*)" \
        -DPTHREADPOOL_SOURCE_DIR="$(echo "$src"/pthreadpool-*)" \
        -DFXDIV_SOURCE_DIR="$(echo "$src"/fxdiv-*)" \
        -DKLEIDIAI_SOURCE_DIR="$src/kleidiai-382b078" \
        >"$tmp/out/logs/cmake.log" 2>&1) || { tail -30 "$tmp/out/logs/cmake.log" >&2; exit 1; }
    (cd "$tmp/build" && nice -n 10 ninja -j"$(nproc)" >"$tmp/out/logs/ninja.log" 2>&1) \
        || { tail -30 "$tmp/out/logs/ninja.log" >&2; exit 1; }
    find "$tmp/build" -name 'lib*.a' -exec cp {} "$tmp/out/lib/" \;
    cp -r "$src/xnnpack/include/." "$tmp/out/include/"
    cp -r "$(echo "$src"/pthreadpool-*)/include/." "$tmp/out/include/"
    mv "$tmp/out" "$xnnpack"
    rm -rf "$tmp"
    trap - EXIT
    echo "test-arm64: built XNNPACK for aarch64 in $((SECONDS - started)) s"
}

started=$SECONDS
if [[ ! -d "$xnnpack" ]]; then
    # One build at a time (two CI runs sharing the cache wait for each other).
    exec 9>"$build_cache/arm64-xnnpack.lock"
    flock 9
    [[ -d "$xnnpack" ]] || build_xnnpack
    exec 9>&-
fi
echo "test-arm64: XNNPACK for aarch64: $xnnpack"

# --- 2. the tests crate for aarch64 (Debian's toolchain, -Zbuild-std) -------
export PATH="/usr/bin:$PATH" RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc
unset RUSTUP_TOOLCHAIN RUSTC_WRAPPER RUSTC_WORKSPACE_WRAPPER
unset XNNPACK_SOURCE_DIR CPUINFO_SOURCE_DIR PTHREADPOOL_SOURCE_DIR FXDIV_SOURCE_DIR XNNCACHE_XNNPACK
# scripts/test-cross.sh's target folder: the aarch64 standard library it
# built is reused.
export RUSTC_BOOTSTRAP=1 CARGO_TARGET_DIR="$build_cache/cargo/cross"
target=aarch64-unknown-linux-gnu
export XNNPACK_LIB_DIR="$xnnpack/lib" XNNPACK_INCLUDE_DIR="$xnnpack/include"
# bindgen parses xnnpack.h as the target sees it (sizes, alignment).
export BINDGEN_EXTRA_CLANG_ARGS_aarch64_unknown_linux_gnu="--target=aarch64-linux-gnu --sysroot=/usr/aarch64-linux-gnu"
# The C/C++ test programs (tests/build.rs, the cc crate) and the link.
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc CXX_aarch64_unknown_linux_gnu=aarch64-linux-gnu-g++
export AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
# qemu reads its library prefix from the environment too, so a child the test
# starts (through binfmt_misc below) finds the aarch64 loader as well.
export QEMU_LD_PREFIX=/usr/aarch64-linux-gnu
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER=qemu-aarch64

# --- 3. binfmt_misc, for tests that re-run their own binary ------------------
# run_child execs the test binary again; plain qemu-user hands that exec to
# the kernel, which cannot run an aarch64 file unless binfmt_misc names qemu
# for it. Preferred: an entry of our own inside a new user and mount namespace
# (kernels 6.7 and later give each user namespace its own binfmt_misc), so
# that nothing on the machine changes and no root is needed. Else, as root, an
# entry on the machine (left in place: the same one Debian's qemu-user-binfmt
# would add). Else only the tests that do not re-run their binary.
magic='\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00'
mask='\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff'
entry=":qemu-aarch64:M::$magic:$mask:$(command -v qemu-aarch64):"
binfmt=/proc/sys/fs/binfmt_misc
register='mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc && printf "%s" "$1" >/proc/sys/fs/binfmt_misc/register && shift && exec "$@"'
# Runs "$@" in a new user and mount namespace with the entry registered. As
# root, users and groups 0-65535 are mapped to themselves, so that the hostile
# tests can give a file to `nobody` and become it as they do natively; the map
# is written from outside (a process cannot map more than itself from inside,
# and Debian's newuidmap is not installed). Otherwise the caller is mapped to
# root alone. Both ends wait on FIFOs the parent holds open for reading and
# writing, so neither blocks if the other fails.
in_namespace() {
    if [[ $(id -u) -ne 0 ]]; then
        unshare --user --map-root-user --mount bash -c "$register" bash "$entry" "$@"
        return
    fi
    local sync unshared_fd mapped_fd inner job status=0
    sync=$(mktemp -d)
    mkfifo "$sync/unshared" "$sync/mapped"
    exec {unshared_fd}<>"$sync/unshared" {mapped_fd}<>"$sync/mapped"
    { unshare --user --mount bash -c 'echo $$ >"$1/unshared" && read -r _ <"$1/mapped" && shift && '"$register" \
        bash "$sync" "$entry" "$@" || { status=$?; echo failed >"$sync/unshared"; exit $status; }; } &
    job=$!
    read -r inner <&"$unshared_fd"
    if [[ $inner != failed ]]; then
        echo "0 0 65536" >"/proc/$inner/uid_map" && echo "0 0 65536" >"/proc/$inner/gid_map" || status=$?
        echo mapped >&"$mapped_fd"
    fi
    wait "$job" || status=$?
    exec {unshared_fd}>&- {mapped_fd}>&-
    rm -rf "$sync"
    return $status
}
wrap=()
tests=("${TESTS[@]}")
if in_namespace true 2>/dev/null; then
    wrap=(in_namespace)
    echo "test-arm64: binfmt_misc of a user namespace runs aarch64 programs with qemu-aarch64"
else
    if [[ ! -e $binfmt/qemu-aarch64 && $(id -u) -eq 0 ]]; then
        [[ -e $binfmt/register ]] || mount -t binfmt_misc binfmt_misc $binfmt 2>/dev/null || true
        printf '%s' "$entry" >$binfmt/register 2>/dev/null || true
    fi
    if grep -qs '^enabled' $binfmt/qemu-aarch64 && grep -qs '^enabled' $binfmt/status; then
        echo "test-arm64: the machine's binfmt_misc runs aarch64 programs with qemu-aarch64"
    else
        # Measured without binfmt: persistence's tests fail with "launch
        # failed: ExitStatus(unix_wait_status(32512))" (the child exits 127).
        missing "no binfmt_misc entry for aarch64 (needs kernel 6.7+ user namespaces or root): only the tests that do not re-run their binary run"
        tests=(paths sharing abi interleaving threads background address_space)
    fi
fi

# --- 4. a memory cap for the run --------------------------------------------
limit=${XNNCACHE_ARM64_MEMORY_LIMIT:-$((6 << 30))}
cgroup=""
for root in /sys/fs/cgroup/memory /sys/fs/cgroup; do
    [[ -w $root ]] || continue
    cg="$root/xnncache-arm64-$$"
    mkdir "$cg" 2>/dev/null || continue
    if [[ -e $cg/memory.limit_in_bytes ]] && echo "$limit" >"$cg/memory.limit_in_bytes"; then
        cgroup=$cg && break
    elif [[ -e $cg/memory.max ]] && echo "$limit" >"$cg/memory.max"; then
        cgroup=$cg && break
    fi
    rmdir "$cg" 2>/dev/null || true
done
peak() {
    [[ -n $cgroup ]] || return 0
    local p
    p=$(cat "$cgroup/memory.max_usage_in_bytes" 2>/dev/null || cat "$cgroup/memory.peak" 2>/dev/null || echo 0)
    echo "test-arm64: peak memory of the run: $((p >> 20)) MiB (cap $((limit >> 20)) MiB)"
}
leave_cgroup() {
    [[ -n $cgroup ]] || return 0
    echo $$ >"$(dirname "$cgroup")/cgroup.procs" 2>/dev/null || echo $$ >"$(dirname "$cgroup")/tasks" 2>/dev/null || true
    rmdir "$cgroup" 2>/dev/null || true
}
if [[ -z $cgroup ]]; then
    missing "no writable memory cgroup: the run is not capped in memory"
fi

args=()
for t in "${tests[@]}"; do args+=(--test "$t"); done
build_started=$SECONDS
nice -n 10 /usr/bin/cargo test -p xnncache-tests --target "$target" -Zbuild-std --no-run "${args[@]}"
echo "test-arm64: built the tests for $target in $((SECONDS - build_started)) s"
run_started=$SECONDS
trap leave_cgroup EXIT
if [[ -n $cgroup ]]; then
    # This shell and everything it starts from here on: cargo, every qemu.
    echo $$ >"$cgroup/cgroup.procs" 2>/dev/null || echo $$ >"$cgroup/tasks"
fi
# The battery's series at a third of their smoke sizes: under qemu every
# launch costs about a second of translation, and the x86-64 run covers the
# sizes. An XNNCACHE_BATTERY_<NAME> already set wins.
export XNNCACHE_BATTERY_FLIP_STRIDE=${XNNCACHE_BATTERY_FLIP_STRIDE:-15} XNNCACHE_BATTERY_MULTI=${XNNCACHE_BATTERY_MULTI:-4}
export XNNCACHE_BATTERY_JUNK=${XNNCACHE_BATTERY_JUNK:-2} XNNCACHE_BATTERY_PAGE_STRIDE=${XNNCACHE_BATTERY_PAGE_STRIDE:-69}
export XNNCACHE_BATTERY_KILLS=${XNNCACHE_BATTERY_KILLS:-6} XNNCACHE_BATTERY_RACE_ROUNDS=${XNNCACHE_BATTERY_RACE_ROUNDS:-2}
export XNNCACHE_BATTERY_THREAD_LIFETIMES=${XNNCACHE_BATTERY_THREAD_LIFETIMES:-2} XNNCACHE_BATTERY_POINTS_PER_SCENARIO=${XNNCACHE_BATTERY_POINTS_PER_SCENARIO:-2}
status=0
XNNCACHE_UNDER_EMULATOR=1 "${wrap[@]}" nice -n 10 /usr/bin/cargo test -p xnncache-tests --target "$target" -Zbuild-std --no-fail-fast "${args[@]}" "$@" || status=$?
peak
if [[ $status -ne 0 ]]; then
    echo "test-arm64: FAILED under qemu (exit $status; a test killed for memory ends by SIGKILL)" >&2
    exit "$status"
fi
echo "test-arm64: $target: ${tests[*]} passed under qemu (run $((SECONDS - run_started)) s, all $((SECONDS - started)) s)"
