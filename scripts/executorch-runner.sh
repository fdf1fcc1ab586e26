# Sourced (not run) by scripts/test-executorch.sh and scripts/bench-executorch.sh:
# builds (or reuses) ExecuTorch through scripts/build-executorch.sh and defines
#
#   ET_BASE ET_SRC ET_VARIANT XNNCACHE_LIB   what build-executorch.sh prints
#   et_cxxflags      compile flags for programs against that ExecuTorch
#                    (its module extension's -D flags, its include folders,
#                    XNNPACK's and xnncache's headers)
#   et_link_stock    link line with ExecuTorch's own XNNWeightsCache.cpp
#   et_link_xnncache link line with xnncache's replacement and libxnncache.a
#   et_build_runners DIR   compiles integrations/executorch/runner.cpp once
#                    and links DIR/runner-stock and DIR/runner-xnncache
#
# The caller must be at the repository's root.
eval "$(bash scripts/build-executorch.sh)"

_et_b="$ET_BASE/build"
_et_s="$ET_SRC"
# The preprocessor definitions ExecuTorch compiled its module extension with
# (paths in compile_commands.json name the temporary folder the tree was
# built in; only the -D flags are taken).
mapfile -t _et_defines < <(python3 - "$_et_b/compile_commands.json" <<'EOF'
import json, shlex, sys
for e in json.load(open(sys.argv[1])):
    if e["file"].endswith("extension/module/module.cpp"):
        for a in shlex.split(e["command"]):
            if a.startswith("-D"):
                print(a)
        break
EOF
)
et_cxxflags=(-std=c++17 -O2 -pthread -Wno-deprecated-declarations "${_et_defines[@]}"
  -I"$_et_s/.." -I"$_et_s/runtime/core/portable_type/c10" -I"$_et_b/include" -I"$_et_b/schema/include"
  -I"$_et_s/third-party/flatbuffers/include"
  -I"$_et_s/backends/xnnpack/third-party/XNNPACK/include"
  -I"$_et_s/backends/xnnpack/third-party/pthreadpool/include"
  -I"$_et_s/backends/xnnpack/third-party/cpuinfo/include"
  -I"$(pwd)/include")
# Every library of the build except the backend, which each variant brings.
mapfile -t _et_libs < <(find "$_et_b" -name '*.a' ! -name 'libxnnpack_backend.a' ! -name 'libgflags*' | sort)
_et_whole=()
for _l in "${_et_libs[@]}"; do
  case "$(basename "$_l")" in libexecutorch.a|libexecutorch_core.a) _et_whole+=("$_l") ;; esac
done
et_link_stock=(-Wl,--whole-archive "$_et_b/backends/xnnpack/libxnnpack_backend.a" "${_et_whole[@]}" -Wl,--no-whole-archive
  -Wl,--start-group "${_et_libs[@]}" -Wl,--end-group -pthread -ldl -lm)
# What integrations/executorch/xnncache.cmake adds: libxnncache.a and its system libraries.
et_link_xnncache=(-Wl,--whole-archive "$ET_VARIANT/lib/libxnnpack_backend.a" "${_et_whole[@]}" -Wl,--no-whole-archive
  -Wl,--start-group "${_et_libs[@]}" "$ET_VARIANT/lib/libxnncache.a" -Wl,--end-group -pthread -ldl -lm -lrt -lutil)

et_build_runners() {  # et_build_runners DIR
  mkdir -p "$1"
  g++ "${et_cxxflags[@]}" -c integrations/executorch/runner.cpp -o "$1/runner.o"
  g++ "$1/runner.o" -o "$1/runner-stock" "${et_link_stock[@]}" &
  local pid=$!
  g++ "$1/runner.o" -o "$1/runner-xnncache" "${et_link_xnncache[@]}"
  wait "$pid"
  # Freshly written pages of the binaries stay dirty in the page cache until
  # written back, and /proc/PID/smaps counts a mapped dirty page cache page
  # as the process's Private_Dirty: write them now so that the runners'
  # dirty-memory figures are the program's own.
  sync "$1/runner-stock" "$1/runner-xnncache"
}
