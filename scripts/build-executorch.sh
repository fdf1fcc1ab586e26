#!/usr/bin/env bash
# Builds ExecuTorch's C++ runtime and its XNNPACK backend offline, from the
# source tarballs in XNNCACHE_DEPS_DIR (default: shared/deps beside the
# repository), and then the xnncache variant of the backend.
#
# Two steps, each cached outside the work tree under
# ${XNNCACHE_BUILD_CACHE:-${XDG_CACHE_HOME:-~/.cache}/xnncache}/executorch/:
#
#   base/<key>/      ExecuTorch as released (stock XNNWeightsCache.cpp), about
#                    1,200 ninja steps (5-6 minutes on 2 cores). The key is
#                    the sha256 of the tarballs' hashes, the CMake flags, the
#                    compiler and RECIPE below: editing the replacement class
#                    does not rebuild ExecuTorch.
#   variant/<key>/   ExecuTorch configured again with docs/EXECUTORCH.md's
#                    CMake lines (integrations/executorch/hook.cmake, which
#                    includes xnncache.cmake); of that tree only the
#                    replacement XNNWeightsCache.cpp is compiled, with the
#                    exact command it generates, and libxnnpack_backend.a
#                    is the stock archive with that one object swapped
#                    (about 30 s). A project that add_subdirectory()s
#                    ExecuTorch and includes xnncache.cmake is configured
#                    too: its program must link libxnncache.a and the system
#                    libraries. The key adds the replacement, the CMake
#                    files, include/xnncache.h and libxnncache.a.
#
# Both appear by rename of a finished temporary folder, under flock(2) on
# executorch/lock, so concurrent callers build once. libxnncache.a comes from
# `cargo build --release -p xnncache` (it holds no XNNPACK: the program links
# ExecuTorch's own).
#
# Prints shell assignments on stdout (ET_BASE, ET_VARIANT, ET_SRC,
# XNNCACHE_LIB); everything else goes to stderr. Usage:
#   eval "$(bash scripts/build-executorch.sh)"
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo=$(pwd)
log() { echo "build-executorch: $*" >&2; }

# Bump when a change here changes what the base build produces.
RECIPE=1

deps="${XNNCACHE_DEPS_DIR:-$(dirname "$repo")/shared/deps}"
[[ -d "$deps" ]] || { log "no source tarballs: set XNNCACHE_DEPS_DIR (looked in $deps)"; exit 1; }

# "file sha256 destination inside executorch/"; the sums come from
# xnnpack-sys/sources.txt (written once there).
tarballs=()
while read -r file dest; do
  sum=$(awk -v f="$file" '$1 == f { print $2 }' xnnpack-sys/sources.txt)
  [[ -n $sum ]] || { log "$file is not in xnnpack-sys/sources.txt"; exit 1; }
  tarballs+=("$file $sum $dest")
done <<'LIST'
executorch-cff6f4dd32e630945b7188512c1f2b4f102b05ad.tar.xz .
xnnpack-92a7ad501b9516f9fecae119e0146dd1f58e54c1.tar.xz backends/xnnpack/third-party/XNNPACK
cpuinfo-6882af581bbbdd073c946eae4fd21bc037ff39cf.tar.xz backends/xnnpack/third-party/cpuinfo
pthreadpool-0e6ca13779b57d397a5ba6bfdcaa8a275bc8ea2e.tar.xz backends/xnnpack/third-party/pthreadpool
FP16-4dfe081cf6bcd15db339cf2680b9281b8451eeb3.tar.xz backends/xnnpack/third-party/FP16
fxdiv_0.0~git20200417.b408327.orig.tar.xz backends/xnnpack/third-party/FXdiv
flatbuffers-595bf0007ab1929570c7671f091313c8fc20644e.tar.xz third-party/flatbuffers
flatcc-896db54787e8b730a6be482c69324751f3f5f117.tar.xz third-party/flatcc
LIST

cmake_flags=(
  -G Ninja -DCMAKE_BUILD_TYPE=Release -DPYTHON_EXECUTABLE=/usr/bin/python3
  -DCMAKE_EXPORT_COMPILE_COMMANDS=ON
  -DEXECUTORCH_BUILD_XNNPACK=ON -DEXECUTORCH_XNNPACK_ENABLE_WEIGHT_CACHE=ON -DEXECUTORCH_XNNPACK_ENABLE_KLEIDI=OFF
  -DEXECUTORCH_BUILD_EXTENSION_MODULE=ON -DEXECUTORCH_BUILD_EXTENSION_DATA_LOADER=ON
  -DEXECUTORCH_BUILD_EXTENSION_FLAT_TENSOR=ON -DEXECUTORCH_BUILD_EXTENSION_NAMED_DATA_MAP=ON
  -DEXECUTORCH_BUILD_EXTENSION_TENSOR=ON -DEXECUTORCH_BUILD_EXECUTOR_RUNNER=OFF
  -DEXECUTORCH_BUILD_EXTENSION_EVALUE_UTIL=OFF -DEXECUTORCH_BUILD_EXTENSION_RUNNER_UTIL=OFF
  -DEXECUTORCH_BUILD_PORTABLE_OPS=OFF -DEXECUTORCH_ENABLE_LOGGING=ON
)

# --- tools (idempotent: apt only for what is missing) -----------------------
need=()
command -v cmake >/dev/null || need+=(cmake)
command -v ninja >/dev/null || need+=(ninja-build)
command -v g++ >/dev/null || need+=(g++)
[[ -x /usr/bin/python3 ]] || need+=(python3)
command -v xz >/dev/null || need+=(xz-utils)
command -v flock >/dev/null || need+=(util-linux)
if [[ ${#need[@]} -gt 0 ]]; then
  sudo=(); [[ $(id -u) -eq 0 ]] || sudo=(sudo)
  log "apt-get install ${need[*]}"
  "${sudo[@]}" apt-get update -q >&2
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -q --no-install-recommends "${need[@]}" >&2
fi

root="${XNNCACHE_BUILD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/xnncache}/executorch"
mkdir -p "$root/base" "$root/variant"

base_key=$( {
  echo "recipe $RECIPE"
  for t in "${tarballs[@]}"; do echo "$t"; done
  printf '%s\n' "${cmake_flags[@]}"
  g++ --version | head -1; cmake --version | head -1
  echo "CXX=${CXX:-} CXXFLAGS=${CXXFLAGS:-} CFLAGS=${CFLAGS:-} LDFLAGS=${LDFLAGS:-}"
} | sha256sum | cut -c1-16)
base="$root/base/$base_key"

exec 9>"$root/lock"
flock 9

if [[ ! -f "$base/done" ]]; then
  for t in "${tarballs[@]}"; do
    read -r file sum _ <<<"$t"
    [[ -f "$deps/$file" ]] || { log "missing $deps/$file"; exit 1; }
    actual=$(sha256sum "$deps/$file" | cut -d' ' -f1)
    [[ "$actual" == "$sum" ]] || { log "$deps/$file: sha256 $actual, expected $sum"; exit 1; }
  done
  tmp="$base.tmp-$$"
  rm -rf "$tmp"; mkdir -p "$tmp/src/executorch"
  trap 'rm -rf "$tmp"' EXIT
  log "unpacking into $tmp"
  for t in "${tarballs[@]}"; do
    read -r file _ dest <<<"$t"
    mkdir -p "$tmp/src/executorch/$dest"
    tar xJf "$deps/$file" -C "$tmp/src/executorch/$dest" --strip-components=1
  done
  log "configuring (log: $tmp/configure.log)"
  if ! cmake -S "$tmp/src/executorch" -B "$tmp/build" "${cmake_flags[@]}" >"$tmp/configure.log" 2>&1; then
    tail -40 "$tmp/configure.log" >&2; exit 1
  fi
  log "building, about 1,200 steps (log: $tmp/build.log)"
  started=$SECONDS
  if ! nice -n 10 ninja -C "$tmp/build" -j "${XNNCACHE_JOBS:-$(nproc)}" >"$tmp/build.log" 2>&1; then
    grep -B2 -A20 "FAILED" "$tmp/build.log" | head -60 >&2; exit 1
  fi
  log "built in $((SECONDS - started)) s"
  echo "$base_key" >"$tmp/done"
  trap - EXIT
  mv "$tmp" "$base"
fi

if [[ "${1:-}" == --base-only ]]; then
  echo "ET_BASE=$base"; echo "ET_SRC=$base/src/executorch"; exit 0
fi

# --- xnncache and the replacement class -------------------------------------
log "cargo build --release -p xnncache"
cargo build --release -p xnncache --quiet >&2
target_dir=$(cargo metadata --format-version 1 --no-deps 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
xnncache_lib="$target_dir/release/libxnncache.a"
[[ -f "$xnncache_lib" ]] || { log "no $xnncache_lib"; exit 1; }

replacement="$repo/integrations/executorch/XNNWeightsCache.cpp"
snippet="$repo/integrations/executorch/xnncache.cmake"
hook="$repo/integrations/executorch/hook.cmake"
variant_key=$( {
  echo "$base_key $repo"
  sha256sum "$replacement" "$snippet" "$hook" "$repo/include/xnncache.h" "$xnncache_lib" \
    "$repo/scripts/build-executorch.sh" "$repo/scripts/executorch-compile-command.py" | cut -d' ' -f1
} | sha256sum | cut -c1-16)
variant="$root/variant/$variant_key"

if [[ ! -f "$variant/done" ]]; then
  tmp="$variant.tmp-$$"
  rm -rf "$tmp"; mkdir -p "$tmp/lib"
  trap 'rm -rf "$tmp"' EXIT
  # Configure ExecuTorch again with docs/EXECUTORCH.md's hook (hook.cmake ->
  # xnncache.cmake): that tree's compile command for xnnpack_backend's
  # weights-cache source is what a user's build runs. Only that one file is
  # compiled; generated headers come from the base build.
  log "configuring ExecuTorch with integrations/executorch/hook.cmake (log: $tmp/configure.log)"
  if ! cmake -S "$base/src/executorch" -B "$tmp/configure" "${cmake_flags[@]}" \
      -DCMAKE_PROJECT_executorch_INCLUDE="$hook" -DXNNCACHE_LIBRARY="$xnncache_lib" >"$tmp/configure.log" 2>&1; then
    tail -40 "$tmp/configure.log" >&2; exit 1
  fi
  grep -q "xnncache: xnnpack_backend builds" "$tmp/configure.log" || { log "hook.cmake did not run"; exit 1; }
  python3 "$repo/scripts/executorch-compile-command.py" "$tmp/configure/compile_commands.json" "$replacement" \
      "$repo/include" "$tmp/configure" "$base/build" "$tmp/XNNWeightsCache.cpp.o" >"$tmp/compile.sh"
  # The README's one line: a project that add_subdirectory()s ExecuTorch
  # and includes xnncache.cmake; a program linking xnnpack_backend must get
  # libxnncache.a and its system libraries (configure only).
  mkdir -p "$tmp/user"
  printf '%s\n' 'cmake_minimum_required(VERSION 3.24)' 'project(xnncache_et_user C CXX)' \
    "add_subdirectory(\"$base/src/executorch\" executorch)" "include(\"$snippet\")" \
    'add_executable(app main.cpp)' 'target_link_libraries(app xnnpack_backend)' >"$tmp/user/CMakeLists.txt"
  echo 'int main() { return 0; }' >"$tmp/user/main.cpp"
  log "configuring a project that add_subdirectory()s ExecuTorch and includes xnncache.cmake"
  if ! cmake -S "$tmp/user" -B "$tmp/user/build" "${cmake_flags[@]}" -DXNNCACHE_LIBRARY="$xnncache_lib" \
      >"$tmp/user.log" 2>&1; then
    tail -40 "$tmp/user.log" >&2; exit 1
  fi
  grep -q "\"file\": \"$replacement\"" "$tmp/user/build/compile_commands.json" \
    || { log "include(xnncache.cmake) did not put $replacement into xnnpack_backend"; exit 1; }
  link_line=$(grep -A8 '^build app:' "$tmp/user/build/build.ninja" | grep 'LINK_LIBRARIES')
  for want in "$xnncache_lib" -lpthread -ldl -lm -lrt -lutil; do
    [[ " $link_line " == *" $want "* ]] || { log "a program linking xnnpack_backend does not get $want"; exit 1; }
  done
  rm -rf "$tmp/user"
  log "compiling the replacement class"
  bash "$tmp/compile.sh" >&2
  # The stock archive with its XNNWeightsCache.cpp.o replaced by ours.
  cp "$base/build/backends/xnnpack/libxnnpack_backend.a" "$tmp/lib/libxnnpack_backend.a"
  ar t "$tmp/lib/libxnnpack_backend.a" | grep -qx 'XNNWeightsCache.cpp.o' || { log "no XNNWeightsCache.cpp.o in libxnnpack_backend.a"; exit 1; }
  ar d "$tmp/lib/libxnnpack_backend.a" XNNWeightsCache.cpp.o
  (cd "$tmp" && ar rcs lib/libxnnpack_backend.a XNNWeightsCache.cpp.o)
  cp "$xnncache_lib" "$tmp/lib/libxnncache.a"
  rm -rf "$tmp/configure"
  echo "$variant_key" >"$tmp/done"
  trap - EXIT
  mv "$tmp" "$variant"
  # Variants are cheap to rebuild: keep the four most recent.
  ls -1dt "$root"/variant/*/ 2>/dev/null | tail -n +5 | while read -r old; do rm -rf "$old"; done
fi
flock -u 9

echo "ET_BASE=$base"
echo "ET_SRC=$base/src/executorch"
echo "ET_VARIANT=$variant"
echo "XNNCACHE_LIB=$variant/lib/libxnncache.a"
# ExecuTorch's configure flags (no spaces in any), for tests that configure it again.
echo "ET_CMAKE_FLAGS='${cmake_flags[*]}'"
