#!/usr/bin/env bash
# ExecuTorch with xnncache, for real: builds ExecuTorch's runtime and XNNPACK
# backend from the offline tarballs (scripts/build-executorch.sh, cached), the
# runner (integrations/executorch/runner.cpp) against ExecuTorch's own
# weights cache and against xnncache's replacement, then for every program in
# shared/executorch (XNNCACHE_ET_PROGRAMS) runs fresh processes:
#
#   none         xnncache build, weight cache off         (the reference output)
#   stock-cold   ExecuTorch's own class, new cache file
#   stock-warm   ExecuTorch's own class, that file
#   cold         xnncache, new cache file
#   warm, warm2  xnncache, that file
#
# and asserts: every output is byte-identical to `none` and to the program's
# expected.bin; a warm process packs nothing (xnncache's packed_bytes 0, from
# the runner's JSON and from the class's XNNCACHE_ET_STATS line); the cache
# file does not change between the warm processes. fc_stack then fc_qd8 on
# one file: the second adds its weights, then neither packs. Two processes loading
# fc_stack onto one new file at once both give the right output and the
# next process packs nothing. With root, runs fc_stack
# with its cache on a 3 MiB tmpfs (a full disk) with both classes. Programs
# unloaded and loaded again in one process (integrations/executorch/reload.cpp)
# pack only at their first load. An app's own CMakeLists.txt that
# add_subdirectory()s ExecuTorch and include()s xnncache.cmake builds and runs.
# Then compiles ExecuTorch's own tests of the class
# (backends/xnnpack/test/runtime/test_xnn_weights_cache*.cpp, gtest) against
# both classes: against ours all but the two that read ExecuTorch's file
# format run unmodified, and are counted; and
# integrations/executorch/test_xnncache_equivalents.cpp against ours.
#
# Options (environment): XNNCACHE_ET_PROGRAMS=dir, XNNCACHE_ET_ONLY="fc_stack cnn",
# XNNCACHE_ET_RUNS=N (timed executes per process, default 10),
# XNNCACHE_ET_REPEAT=N (each row: N fresh processes, median; default 3),
# XNNCACHE_ET_GTEST_EXPECTED=N (how many of ExecuTorch's tests of the class must pass
# against ours; default 24, the count at the pinned ExecuTorch),
# XNNCACHE_ET_SKIP_GTEST=1, XNNCACHE_ET_SKIP_FULL_DISK=1, XNNCACHE_ET_KEEP=1 (keep the work folder: binaries,
# outputs, logs), XNNCACHE_ET_UPDATE_PROGRAM=name (the program the model-update
# section derives three versions from; default fc_stack),
# XNNCACHE_ET_UPDATES_ONLY=1 (stop after the model updates).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo=$(pwd)
started=$SECONDS
log() { echo "test-executorch: $*" >&2; }

if ! dpkg -s libgtest-dev >/dev/null 2>&1; then
  sudo=(); [[ $(id -u) -eq 0 ]] || sudo=(sudo)
  log "apt-get install libgtest-dev"
  "${sudo[@]}" apt-get update -q >&2
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -q --no-install-recommends libgtest-dev >&2
fi

source scripts/executorch-runner.sh   # ExecuTorch (cached), et_cxxflags, et_link_*, et_build_runners
log "ExecuTorch ready after $((SECONDS - started)) s ($ET_BASE, $ET_VARIANT)"

# --- The hook says what is wrong at configure time (issue 21) --------------
# ExecuTorch configured with docs/EXECUTORCH.md's hook line, each time with one mistake a
# new user makes: the configure must fail with the message that says what to do.
configure_must_fail() {  # WHAT EXPECTED-MESSAGE CMAKE-ARGS...
  local what=$1 expected=$2; shift 2
  local dir; dir=$(mktemp -d)
  local t=$SECONDS
  # shellcheck disable=SC2086
  if cmake -S "$ET_SRC" -B "$dir" $ET_CMAKE_FLAGS \
      -DCMAKE_PROJECT_executorch_INCLUDE="$(pwd)/integrations/executorch/hook.cmake" "$@" >"$dir.log" 2>&1; then
    log "FAIL: configuring ExecuTorch with $what succeeded"; rm -rf "$dir" "$dir.log"; exit 1
  fi
  if ! grep -q "$expected" "$dir.log"; then
    log "FAIL: configuring with $what failed without saying \"$expected\":"; tail -20 "$dir.log" >&2; rm -rf "$dir" "$dir.log"; exit 1
  fi
  log "configuring with $what fails at configure time, saying so ($((SECONDS - t)) s)"
  rm -rf "$dir" "$dir.log"
}
if [[ -z "${XNNCACHE_ET_UPDATES_ONLY:-}" ]]; then
configure_must_fail "a XNNCACHE_LIBRARY that does not exist" "cargo build --release -p xnncache" \
  -DXNNCACHE_LIBRARY=/nonexistent/libxnncache.a
configure_must_fail "EXECUTORCH_XNNPACK_ENABLE_WEIGHT_CACHE=OFF" "EXECUTORCH_XNNPACK_ENABLE_WEIGHT_CACHE is OFF" \
  -DXNNCACHE_LIBRARY="$XNNCACHE_LIB" -DEXECUTORCH_XNNPACK_ENABLE_WEIGHT_CACHE=OFF
fi

programs="${XNNCACHE_ET_PROGRAMS:-$(dirname "$repo")/shared/executorch}"
[[ -d "$programs" ]] || { log "no programs folder $programs (set XNNCACHE_ET_PROGRAMS)"; exit 1; }
work=$(mktemp -d "${TMPDIR:-/tmp}/xnncache-et.XXXXXX")
if [[ -n "${XNNCACHE_ET_KEEP:-}" ]]; then log "keeping $work"; else trap 'rm -rf "$work"' EXIT; fi

S="$ET_SRC"
cxxflags=("${et_cxxflags[@]}")
link_stock=("${et_link_stock[@]}")
link_xnncache=("${et_link_xnncache[@]}")

t=$SECONDS
et_build_runners "$work/bin"
log "runners built in $((SECONDS - t)) s"

runs="${XNNCACHE_ET_RUNS:-10}"
only="${XNNCACHE_ET_ONLY:-llm_q4 fc_stack fc_qd8 cnn}"
failures=0
fail() { log "FAIL: $*"; failures=$((failures + 1)); }

# json FIELD FILE: one field of the runner's JSON line (dotted for nested).
json() {
  python3 - "$1" "$2" <<'EOF'
import json, sys
v = json.loads(open(sys.argv[2]).read().strip().splitlines()[-1])
for k in sys.argv[1].split("."):
    v = None if v is None else v.get(k)
print("null" if v is None else (str(v).lower() if isinstance(v, bool) else v))
EOF
}

# run NAME BINARY MODE [PATH]: one fresh process; its JSON goes to $work/NAME.json.
run() {
  local name=$1 bin=$2 mode=$3 path=${4:-} rc=0
  local args=("$programs/$prog.pte" "$programs/$prog.input.bin" "$programs/$prog.expected.bin" "$mode")
  [[ -n "$path" ]] && args+=("$path")
  XNNCACHE_ET_STATS=1 "$work/bin/$bin" "${args[@]}" --runs "$runs" --out "$work/$prog.$name.out" \
      >"$work/$prog.$name.json" 2>"$work/$prog.$name.err" || rc=$?
  if [[ $rc -ne 0 ]]; then
    fail "$prog $name: runner exited $rc: $(tail -3 "$work/$prog.$name.err" | tr '\n' ' ') $(cat "$work/$prog.$name.json")"
  fi
}

file_id() {  # size, mtime (ns), inode and hash: any write or replacement changes it
  if [[ -f "$1" ]]; then echo "$(stat -c '%s_%.9Y_%i' "$1")_$(sha256sum "$1" | cut -c1-16)"; else echo missing; fi
}

reps="${XNNCACHE_ET_REPEAT:-3}"
[[ -n "${XNNCACHE_ET_UPDATES_ONLY:-}" ]] && only=""
for prog in $only; do
  [[ -f "$programs/$prog.pte" ]] || { fail "$programs/$prog.pte missing"; continue; }
  for rep in $(seq 1 "$reps"); do
    stock_file="$work/$prog.stock.cache"
    ours="$work/$prog.xnncache"
    rm -f "$stock_file" "$ours"
    run "none.$rep" runner-xnncache none
    run "stock-cold.$rep" runner-stock file "$stock_file"
    run "stock-warm.$rep" runner-stock file "$stock_file"
    run "cold.$rep" runner-xnncache file "$ours"
    id_cold=$(file_id "$ours")
    run "warm.$rep" runner-xnncache file "$ours"
    id_warm=$(file_id "$ours")
    run "warm2.$rep" runner-xnncache file "$ours"
    id_warm2=$(file_id "$ours")

    for name in none stock-cold stock-warm cold warm warm2; do
      out="$work/$prog.$name.$rep.out"
      [[ -f "$out" ]] || continue
      cmp -s "$out" "$programs/$prog.expected.bin" || fail "$prog $name ($rep): output differs from $prog.expected.bin"
      cmp -s "$out" "$work/$prog.none.1.out" || fail "$prog $name ($rep): output differs from the run without a cache"
    done
    [[ "$(json xnncache.packed_bytes "$work/$prog.cold.$rep.json")" =~ ^[1-9] ]] || fail "$prog cold ($rep): xnncache packed nothing (is the replacement linked?)"
    [[ "$(json xnncache.backing "$work/$prog.cold.$rep.json")" == 0 ]] || fail "$prog cold ($rep): cache not backed by its file"
    for name in warm warm2; do
      f="$work/$prog.$name.$rep"
      [[ "$(json xnncache.packed_bytes "$f.json")" == 0 ]] || fail "$prog $name ($rep): packed $(json xnncache.packed_bytes "$f.json") bytes"
      [[ "$(json xnncache.file_state "$f.json")" == 2 ]] || fail "$prog $name ($rep): the cache file was not reused"
      grep -q '^xnncache-executorch: .*"packed_bytes":0,' "$f.err" || fail "$prog $name ($rep): the class's XNNCACHE_ET_STATS line does not say packed_bytes 0"
    done
    for name in cold warm warm2; do
      f="$work/$prog.$name.$rep"
      maps=$(json cache_file_maps "$f.json")
      [[ -n "$maps" && "$maps" != *w* ]] || fail "$prog $name ($rep): cache file mapped '$maps' (expected read-only pages)"
      ! grep -q '^E ' "$f.err" || fail "$prog $name ($rep): errors logged: $(grep -m2 '^E ' "$f.err" | tr '\n' ' ')"
    done
    if [[ $rep == 1 ]]; then
      log "$prog: cache file mappings after load: stock cold '$(json cache_file_maps "$work/$prog.stock-cold.1.json")', stock warm '$(json cache_file_maps "$work/$prog.stock-warm.1.json")', xnncache cold '$(json cache_file_maps "$work/$prog.cold.1.json")', warm '$(json cache_file_maps "$work/$prog.warm.1.json")'"
    fi
    [[ "$id_warm" == "$id_warm2" ]] || fail "$prog ($rep): the cache file changed between the warm runs ($id_warm -> $id_warm2)"
    [[ "$id_cold" == "$id_warm" ]] || fail "$prog ($rep): the cache file changed between the cold and the first warm run ($id_cold -> $id_warm)"
    if [[ $rep == 1 ]] && grep -q "errno=11" "$work/$prog.stock-warm.$rep.err"; then
      log "$prog: ExecuTorch's own class on its warm load logs: $(grep -m1 -o 'flock([^)]*) failed (errno=11)' "$work/$prog.stock-warm.$rep.err" | sed "s|$work/||")"
    fi
  done
done
echo "== ExecuTorch + XNNPACK, median of $reps fresh processes per row; ms; load_method builds the XNNPACK runtime;" \
     "steady = median of $runs executes after the first; packed/found = xnncache's bytes" >&2
python3 - "$work" "$only" "$reps" >&2 <<'EOF'
import json, os, statistics, sys
work, only, reps = sys.argv[1], sys.argv[2].split(), int(sys.argv[3])
cols = ("program", "run", "load_method", "first_exec", "steady_exec", "peak_rss_MiB", "packed_bytes", "found_bytes")
rows = [cols]
for prog in only:
    for name in ("none", "stock-cold", "stock-warm", "cold", "warm", "warm2"):
        runs = []
        for rep in range(1, reps + 1):
            p = os.path.join(work, f"{prog}.{name}.{rep}.json")
            try:
                runs.append(json.loads(open(p).read().strip().splitlines()[-1]))
            except (OSError, ValueError, IndexError):
                pass
        if not runs:
            rows.append((prog, name, "-", "-", "-", "-", "-", "-"))
            continue
        med = lambda k: statistics.median(r[k] for r in runs)
        x = [r["xnncache"] for r in runs if r.get("xnncache")]
        xm = lambda k: str(int(statistics.median(s[k] for s in x))) if x else "-"
        rows.append((prog, name, f"{med('load_method_ms'):.3f}", f"{med('first_execute_ms'):.3f}",
                     f"{med('steady_execute_ms'):.3f}", f"{med('peak_rss_kib') / 1024:.1f}",
                     xm("packed_bytes"), xm("found_bytes")))
w = [max(len(str(r[i])) for r in rows) for i in range(len(cols))]
for r in rows:
    print("  ".join(str(v).rjust(w[i]) if i > 1 else str(v).ljust(w[i]) for i, v in enumerate(r)))
EOF

# --- Two programs, one cache file: the second adds its weights, then neither packs
multi="$work/multi.xnncache"
for step in fc_stack:cold fc_qd8:cold fc_stack:warm fc_qd8:warm; do
  prog=${step%%:*}
  run "multi-${step#*:}" runner-xnncache file "$multi"
  cmp -s "$work/$prog.multi-${step#*:}.out" "$programs/$prog.expected.bin" || fail "$prog on a shared file (${step#*:}): output differs"
done
[[ "$(json xnncache.loaded_entries "$work/fc_qd8.multi-cold.json")" =~ ^[1-9] ]] || fail "fc_qd8 did not load fc_stack's entries from the shared file"
[[ "$(json xnncache.packed_bytes "$work/fc_qd8.multi-cold.json")" =~ ^[1-9] ]] || fail "fc_qd8 packed nothing on the shared file"
for prog in fc_stack fc_qd8; do
  [[ "$(json xnncache.packed_bytes "$work/$prog.multi-warm.json")" == 0 ]] || fail "$prog on a shared file (warm): packed $(json xnncache.packed_bytes "$work/$prog.multi-warm.json") bytes"
done
# The same with ExecuTorch's own class, for the record: the file's size after each step.
stock_multi="$work/multi.stock.cache"
sizes=()
for step in fc_stack:cold fc_qd8:cold fc_qd8:warm; do
  prog=${step%%:*}
  run "stock-multi-${step#*:}" runner-stock file "$stock_multi"
  sizes+=("$prog ${step#*:} $(stat -c %s "$stock_multi" 2>/dev/null || echo 0) bytes, load_method $(json load_method_ms "$work/$prog.stock-multi-${step#*:}.json") ms")
done
log "ExecuTorch's own class, fc_stack then fc_qd8 on one file: $(IFS=';'; echo "${sizes[*]}")"
log "xnncache, fc_stack then fc_qd8 on one file: fc_qd8 added $(json xnncache.packed_bytes "$work/fc_qd8.multi-cold.json") bytes to $(json xnncache.loaded_entries "$work/fc_qd8.multi-cold.json") loaded entries (file $(stat -c %s "$multi") bytes); warm, both packed 0 (fc_qd8 load_method $(json load_method_ms "$work/fc_qd8.multi-warm.json") ms)"

# --- Model updates on one cache file (issue 25) ------------------------------
# Three versions of one program: the same shapes and layout, other weights,
# each constant renamed to the sha256 of its new bytes, as ExecuTorch's
# exporter names constants. Derived here from $XNNCACHE_ET_UPDATE_PROGRAM
# (default fc_stack) by rotating each constant's bytes by 4 x version bytes
# (whole fp32 values, whole int8/int4 groups: the same value distribution,
# new digests). Each version is launched cold then warm, one cache file for
# all three, fresh processes, with ExecuTorch's own class and with xnncache.
# Asserts: every output equals the run without a cache; xnncache's warm
# launches pack nothing and leave its file as it was; after each version the
# xnncache file is at most 1.10x a file holding that version alone. Prints the
# table of docs/UPDATES.md.
updates() {
  local base=${XNNCACHE_ET_UPDATE_PROGRAM:-fc_stack} d="$work/updates" v
  mkdir -p "$d"
  python3 - "$programs" "$base" "$d" <<'EOF'
import hashlib, json, re, sys
programs, base, out = sys.argv[1:]
pte = json.load(open(f"{programs}/manifest.json"))["models"][base]["pte"]
data = open(f"{programs}/{base}.pte", "rb").read()
for v in (1, 2, 3):
    b = bytearray(data)
    for nd in pte["named_data"]:
        off, size, key = nd["file_offset"], nd["size"], nd["key"]
        old = data[off:off + size]
        shift = (4 * v) % size
        new = old[shift:] + old[:shift]
        b[off:off + size] = new
        digest = re.search(r"[0-9a-f]{64}", key)
        if digest is None or new == old:
            continue
        newkey = (key[:digest.start()] + hashlib.sha256(new).hexdigest() + key[digest.end():]).encode()
        if bytes(b).count(key.encode()) == 0:
            sys.exit(f"{base}.pte: key {key} not found")
        b = bytearray(bytes(b).replace(key.encode(), newkey))
    open(f"{out}/v{v}.pte", "wb").write(b)
EOF
  # run_version NAME BINARY VERSION MODE [PATH]
  run_version() {
    local name=$1 bin=$2 v=$3 mode=$4 path=${5:-} rc=0 expected="$d/v$3.none.out"
    [[ $name == none ]] && expected=-  # the reference of this version
    local args=("$d/v$v.pte" "$programs/$base.input.bin" "$expected" "$mode")
    [[ -n "$path" ]] && args+=("$path")
    XNNCACHE_ET_STATS=1 "$work/bin/$bin" "${args[@]}" --runs 3 --out "$d/v$v.$name.out" \
        >"$d/v$v.$name.json" 2>"$d/v$v.$name.err" || rc=$?
    [[ $rc -eq 0 ]] || fail "update v$v $name: runner exited $rc: $(tail -3 "$d/v$v.$name.err" | tr '\n' ' ')"
    if [[ $name != none ]]; then
      cmp -s "$d/v$v.$name.out" "$d/v$v.none.out" || fail "update v$v $name: output differs from the run without a cache"
    fi
  }
  mb() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1e6 }'; }
  local stock="$d/stock.cache" ours="$d/ours.xnncache" rows=() id_cold id_warm alone size stock_size
  for v in 1 2 3; do
    run_version none runner-xnncache "$v" none
    ! cmp -s "$d/v$v.none.out" "$programs/$base.expected.bin" || fail "update v$v: its output is the original program's (the weights did not change)"
    run_version stock-cold runner-stock "$v" file "$stock"
    run_version stock-warm runner-stock "$v" file "$stock"
    stock_size=$(stat -c %s "$stock" 2>/dev/null || echo 0)
    run_version cold runner-xnncache "$v" file "$ours"
    id_cold=$(file_id "$ours")
    run_version warm runner-xnncache "$v" file "$ours"
    id_warm=$(file_id "$ours")
    run_version alone runner-xnncache "$v" file "$d/alone-v$v.xnncache"
    alone=$(stat -c %s "$d/alone-v$v.xnncache")
    size=$(stat -c %s "$ours")
    [[ "$(json xnncache.packed_bytes "$d/v$v.warm.json")" == 0 ]] || fail "update v$v warm: packed $(json xnncache.packed_bytes "$d/v$v.warm.json") bytes"
    [[ "$id_cold" == "$id_warm" ]] || fail "update v$v: the warm launch changed the cache file ($id_cold -> $id_warm)"
    (( size * 10 <= alone * 11 )) || fail "update v$v: the cache file is $size bytes, over 1.10 x $alone (the version alone)"
    if [[ $v -gt 1 ]]; then
      grep -q '"dropped_bytes":[1-9]' "$d/v$v.cold.err" || fail "update v$v cold: the class's stats line reports no dropped bytes"
    fi
    rows+=("| version $v | $(mb "$stock_size") MB | $(json load_method_ms "$d/v$v.stock-cold.json") / $(json load_method_ms "$d/v$v.stock-warm.json") | $(mb "$size") MB | $(json load_method_ms "$d/v$v.cold.json") / $(json load_method_ms "$d/v$v.warm.json") | $(mb "$alone") MB |")
  done
  {
    echo "Model updates, $base, three versions on one cache file (scripts/test-executorch.sh):"
    echo "| after | stock file | stock load_method cold / warm (ms) | xnncache file | xnncache load_method cold / warm (ms) | xnncache, that version alone |"
    echo "|---|---:|---:|---:|---:|---:|"
    printf '%s\n' "${rows[@]}"
  } | tee "$work/updates.md" >&2
}
updates
if [[ -n "${XNNCACHE_ET_UPDATES_ONLY:-}" ]]; then
  log "XNNCACHE_ET_UPDATES_ONLY: stopping after the model updates ($failures failures)"
  [[ $failures -eq 0 ]]
  exit
fi

# --- Two processes loading the same program onto one new cache file at once -
prog=fc_stack
shared_file="$work/$prog.shared.xnncache"
pids=()
for i in 1 2; do
  XNNCACHE_ET_STATS=1 "$work/bin/runner-xnncache" "$programs/$prog.pte" "$programs/$prog.input.bin" \
      "$programs/$prog.expected.bin" file "$shared_file" --out "$work/$prog.shared$i.out" \
      >"$work/$prog.shared$i.json" 2>"$work/$prog.shared$i.err" &
  pids+=($!)
done
for i in 1 2; do
  wait "${pids[$((i - 1))]}" || fail "$prog: concurrent cold process $i exited $?"
  cmp -s "$work/$prog.shared$i.out" "$programs/$prog.expected.bin" || fail "$prog: concurrent cold process $i: output differs"
done
run shared-warm runner-xnncache file "$shared_file"
[[ "$(json xnncache.packed_bytes "$work/$prog.shared-warm.json")" == 0 ]] || fail "$prog: warm after two concurrent cold processes packed $(json xnncache.packed_bytes "$work/$prog.shared-warm.json") bytes"
cmp -s "$work/$prog.shared-warm.out" "$programs/$prog.expected.bin" || fail "$prog: warm after two concurrent cold processes: output differs"
log "two concurrent cold processes on one file: packed $(json xnncache.packed_bytes "$work/$prog.shared1.json") and $(json xnncache.packed_bytes "$work/$prog.shared2.json") bytes, both outputs identical; the next process packed $(json xnncache.packed_bytes "$work/$prog.shared-warm.json")"

# --- Programs unloaded and loaded again in one process (issue 20) -----------
# integrations/executorch/reload.cpp: Modules made, run and destroyed on one
# cache file, one after the other (each load after a program's first opens the
# file anew) and with overlapping lifetimes (a program made again while the
# other keeps the cache open). Every output must equal the expected bytes and
# no load after a program's first may pack anything.
g++ "${cxxflags[@]}" integrations/executorch/reload.cpp -o "$work/bin/reload" "${link_xnncache[@]}"
reload_case() {  # MODE ROUNDS PROGRAM...
  local mode=$1 rounds=$2 args=() p; shift 2
  for p in "$@"; do args+=("$programs/$p.pte" "$programs/$p.input.bin" "$programs/$p.expected.bin"); done
  if "$work/bin/reload" "$work/reload-$mode.xnncache" "$rounds" "$mode" "${args[@]}" >"$work/reload-$mode.log" 2>&1; then
    log "reload ($mode, $rounds rounds, $*): $(grep -c '^reload: round' "$work/reload-$mode.log") loads, outputs identical, packed only at each program's first load ($(awk '/^reload: round 1 /{s+=$6} END{print s+0}' "$work/reload-$mode.log") bytes in round 1)"
  else
    fail "reload ($mode, $*): $(grep -v '^reload: round .* packed 0 identical 1' "$work/reload-$mode.log" | tr '\n' ' ')"
  fi
}
reload_case sequential 3 fc_stack fc_qd8
reload_case alternating 2 fc_stack fc_qd8

# --- A full disk: a 3 MiB tmpfs for fc_stack's 6 MiB of packed weights ------
# (needs mount(2), i.e. root; skipped otherwise). ExecuTorch's own class packs
# through a MAP_SHARED mapping of a sparse file and dies of SIGBUS when the
# filesystem cannot back a page; xnncache reserves blocks first and puts what
# does not fit on the heap.
small="$work/small-disk"
mkdir -p "$small"
if [[ -z "${XNNCACHE_ET_SKIP_FULL_DISK:-}" ]] && mount -t tmpfs -o size=3m tmpfs "$small" 2>/dev/null; then
  trap 'umount "$small" 2>/dev/null || true; rm -rf "$work"' EXIT
  [[ -n "${XNNCACHE_ET_KEEP:-}" ]] && trap 'umount "$small" 2>/dev/null || true' EXIT
  prog=fc_stack
  rc=0
  # (under an inner shell whose "Bus error" report goes nowhere: the status says it)
  bash -c '"$@" >"$0.json" 2>"$0.err"; exit $?' "$work/full-stock" "$work/bin/runner-stock" "$programs/$prog.pte" \
      "$programs/$prog.input.bin" "$programs/$prog.expected.bin" file "$small/stock.cache" 2>/dev/null || rc=$?
  log "full disk, ExecuTorch's own class: exit status $rc$([[ $rc -eq 135 ]] && echo ' (SIGBUS)')"
  rm -f "$small"/*
  rc=0
  "$work/bin/runner-xnncache" "$programs/$prog.pte" "$programs/$prog.input.bin" "$programs/$prog.expected.bin" \
      file "$small/xnncache.cache" >"$work/full-xnncache.json" 2>"$work/full-xnncache.err" || rc=$?
  if [[ $rc -ne 0 ]]; then
    fail "full disk, xnncache: runner exited $rc"
  else
    log "full disk, xnncache: exit 0, output identical, $(json xnncache.heap_fallback_bytes "$work/full-xnncache.json") bytes on the heap, backing $(json xnncache.backing "$work/full-xnncache.json") (2 = heap)"
    [[ "$(json xnncache.heap_fallback_bytes "$work/full-xnncache.json")" =~ ^[1-9] ]] || fail "full disk, xnncache: no heap fallback reported"
  fi
  umount "$small"
else
  log "full-disk check skipped (XNNCACHE_ET_SKIP_FULL_DISK set, or no permission to mount a tmpfs)"
fi

# --- README's one line: an app's own CMakeLists.txt (issue 21) ------------
# add_subdirectory(executorch), then include(xnncache.cmake), then a program
# that links xnnpack_backend: it must build with nothing else and, run on
# fc_stack without a cache, cold and warm, give the expected bytes with the
# replacement class (the runner's "class" is "xnncache") and pack nothing
# warm. Its build tree is kept beside ExecuTorch's (keyed by ExecuTorch's
# build): the first build compiles ExecuTorch again (about 1,000 steps),
# later ones only what changed (the replacement, libxnncache.a).
app_tree="$(dirname "$(dirname "$ET_BASE")")/app/$(basename "$ET_BASE")"
mkdir -p "$app_tree/project"
app_lib="$app_tree/libxnncache.a"
cmp -s "$XNNCACHE_LIB" "$app_lib" || cp "$XNNCACHE_LIB" "$app_lib"
cat >"$app_tree/project/CMakeLists.txt" <<CMAKE
cmake_minimum_required(VERSION 3.24)
project(xnncache_et_app C CXX)
add_subdirectory("$S" executorch)
set(XNNCACHE_LIBRARY "$app_lib")
include("$repo/integrations/executorch/xnncache.cmake")
add_executable(app "$repo/integrations/executorch/runner.cpp")
target_include_directories(app PRIVATE "$repo/include" "$S/backends/xnnpack/third-party/XNNPACK/include")
target_link_libraries(app PRIVATE xnnpack_backend extension_module_static extension_tensor extension_threadpool)
CMAKE
t=$SECONDS
(
  flock 8
  # shellcheck disable=SC2086
  cmake -S "$app_tree/project" -B "$app_tree/build" $ET_CMAKE_FLAGS >"$app_tree/configure.log" 2>&1 \
    || { tail -30 "$app_tree/configure.log" >&2; exit 1; }
  nice -n 10 ninja -C "$app_tree/build" app >"$app_tree/build.log" 2>&1 \
    || { grep -B2 -A20 FAILED "$app_tree/build.log" | head -40 >&2; exit 1; }
) 8>"$app_tree/lock" || fail "an app project with include(xnncache.cmake) does not configure or build (logs in $app_tree)"
if [[ -x "$app_tree/build/app" ]]; then
  cp "$app_tree/build/app" "$work/bin/app"
  prog=fc_stack
  run app-none app none
  run app-cold app file "$work/app.xnncache"
  run app-warm app file "$work/app.xnncache"
  for r in app-none app-cold app-warm; do
    cmp -s "$work/$prog.$r.out" "$programs/$prog.expected.bin" || fail "the app project's $r output differs"
  done
  [[ "$(json class "$work/$prog.app-cold.json")" == xnncache ]] || fail "the app project did not link the replacement class"
  [[ "$(json xnncache.packed_bytes "$work/$prog.app-warm.json")" == 0 ]] || fail "the app project's warm run packed $(json xnncache.packed_bytes "$work/$prog.app-warm.json") bytes"
  log "an app project that add_subdirectory()s ExecuTorch and include()s xnncache.cmake builds ($((SECONDS - t)) s) and runs fc_stack: none, cold, warm identical; warm packed $(json xnncache.packed_bytes "$work/$prog.app-warm.json") bytes"
fi

# --- ExecuTorch's tests of the class, against both -------------------------
if [[ -n "${XNNCACHE_ET_SKIP_GTEST:-}" && ${XNNCACHE_REQUIRE_ALL:-0} == 1 ]]; then
  fail "XNNCACHE_ET_SKIP_GTEST is set, but XNNCACHE_REQUIRE_ALL=1 needs ExecuTorch's tests of the class to run"
fi
if [[ -z "${XNNCACHE_ET_SKIP_GTEST:-}" ]]; then
  t=$SECONDS
  tests="$S/backends/xnnpack/test/runtime"
  gtest_libs=(-lgtest -lgtest_main)
  for f in test_xnn_weights_cache test_xnn_weights_cache_manager; do
    g++ "${cxxflags[@]}" -c "$tests/$f.cpp" -o "$work/$f.o"
  done
  g++ "${cxxflags[@]}" -DXNNCACHE_ET_PROGRAMS="\"$programs\"" -c integrations/executorch/test_xnncache_equivalents.cpp -o "$work/equiv.o"
  g++ "$work/test_xnn_weights_cache.o" -o "$work/bin/cache-stock" "${link_stock[@]}" "${gtest_libs[@]}"
  g++ "$work/test_xnn_weights_cache_manager.o" -o "$work/bin/manager-stock" "${link_stock[@]}" "${gtest_libs[@]}"
  g++ "$work/test_xnn_weights_cache.o" -o "$work/bin/cache-xnncache" "${link_xnncache[@]}" "${gtest_libs[@]}"
  g++ "$work/test_xnn_weights_cache_manager.o" -o "$work/bin/manager-xnncache" "${link_xnncache[@]}" "${gtest_libs[@]}"
  g++ "$work/equiv.o" -o "$work/bin/equivalents-xnncache" "${link_xnncache[@]}" "${gtest_libs[@]}"
  log "gtest programs built in $((SECONDS - t)) s"
  # The only tests of ExecuTorch's not run against xnncache's class: they
  # read or write ExecuTorch's own file format (byte offsets of its entry
  # records and footer); integrations/executorch/test_xnncache_equivalents.cpp
  # tests the same promises on xnncache's format.
  stock_format="XNNWeightsCacheTest.SavePackedIndex_EntryFormatIncludesSeed"
  stock_format+=":XNNWeightsCacheTest.LoadPackedCache_CorruptedSeed_ProducesCorrectOutput"
  # How many of ExecuTorch's tests of the class (both files) run against
  # xnncache's class at the pinned ExecuTorch: fewer means a test stopped
  # running (skipped, filtered, or no longer built), which fails the script.
  et_tests_expected=${XNNCACHE_ET_GTEST_EXPECTED:-24}
  et_tests_ran=0
  gt() {  # gt LABEL BINARY [FILTER]: runs it; every test it lists must pass
    local label=$1 bin=$2 filter=${3:-*} out="$work/gtest.$1.log" listed passed
    listed=$("$work/bin/$bin" --gtest_filter="$filter" --gtest_list_tests | grep -c '^  ')
    if (cd "$work" && "$work/bin/$bin" --gtest_filter="$filter" >"$out" 2>&1); then
      passed=$(sed -n 's/^\[  PASSED  \] \([0-9]*\) tests\{0,1\}\..*/\1/p' "$out")
      if [[ ${passed:-0} -ne $listed ]] || grep -q '^\[  SKIPPED \]' "$out"; then
        fail "gtest $label: $listed listed, ${passed:-0} passed, $(grep -c '^\[  SKIPPED \]' "$out") skipped"
      else
        log "gtest $label: $passed of $listed passed"
      fi
      gt_passed=${passed:-0}
    else
      fail "gtest $label: $(grep -E '^\[  FAILED  \]' "$out" | tr '\n' ' ')"
      gt_passed=0
    fi
  }
  gt "ExecuTorch's test_xnn_weights_cache, stock class" cache-stock
  gt "ExecuTorch's test_xnn_weights_cache_manager, stock class" manager-stock
  # ExecuTorch's tests look at the file right after finalize_for_runtime, as
  # its own class writes it there; the xnncache class writes in the
  # background unless told otherwise.
  export XNNCACHE_ET_SYNC_WRITEBACK=1
  gt "ExecuTorch's test_xnn_weights_cache, xnncache class (all but the 2 of the stock format)" cache-xnncache "-$stock_format"
  et_tests_ran=$((et_tests_ran + gt_passed))
  gt "ExecuTorch's test_xnn_weights_cache_manager, xnncache class" manager-xnncache
  et_tests_ran=$((et_tests_ran + gt_passed))
  if [[ $et_tests_ran -lt $et_tests_expected ]]; then
    fail "only $et_tests_ran of ExecuTorch's tests of the class passed against xnncache's class, $et_tests_expected expected"
  else
    log "ExecuTorch's tests of the class, unmodified, against xnncache's: $et_tests_ran passed (2 of the stock format not run)"
  fi
  gt "test_xnncache_equivalents, xnncache class" equivalents-xnncache
  unset XNNCACHE_ET_SYNC_WRITEBACK
fi

log "done in $((SECONDS - started)) s"
if [[ $failures -ne 0 ]]; then
  log "$failures failure(s)"
  exit 1
fi
