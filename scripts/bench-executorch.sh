#!/usr/bin/env bash
# xnncache vs ExecuTorch's own weights cache, side by side, on ExecuTorch's
# own programs (shared/executorch beside the repository, or
# XNNCACHE_ET_PROGRAMS).
#
# Builds (or reuses) ExecuTorch and the runner twice through
# scripts/executorch-runner.sh: `stock` (ExecuTorch's XNNWeightsCache.cpp)
# and `xnncache` (integrations/executorch/XNNWeightsCache.cpp). Then, for every
# program and thread count, N times (each time in fresh processes, the two
# builds interleaved and their order alternated):
#
#   none   weight cache off
#   heap   weight cache on, no file
#   cold   weight cache on, a new cache file
#   warm   the same file, next process
#   disk   the same file again, warm from disk: the file and the program
#          dropped from the page cache first (scripts/evict.py: fsync, then
#          POSIX_FADV_DONTNEED; it checks with fincore that they left), as a
#          phone sees an app come back after its files were evicted
#
# Per row also: the bytes the process made the disk read (/proc/self/io),
# every execute (a cold process's first ones run during the write-back; the
# worst cold/none ratio is reported) and when xnncache's commit was durable.
#
# The full llm_1b comparison (issue 17; export it first, see
# shared/executorch/README.md):
#   bash scripts/bench-executorch.sh --programs-dir DIR --programs llm_1b --threads 2 --repeat 5
#
# and reports the median of each figure (see scripts/bench-executorch.py):
# time to first output (load_method + first execute), load_method, first and
# steady execute, peak RSS, PSS and dirty bytes right after load_method,
# dirty bytes in the cache file's own mappings, the cache file's size, whether
# stderr had an error or warning line, and the ratios xnncache/stock (warm,
# cold) and cold/none (both builds). A text table, JSON rows and a markdown
# table for docs/BENCHMARKS.md.
#
# Every output must be byte-identical to the program's expected.bin: a
# mismatch (or a runner failure) makes the run exit 1. Timings are reported,
# never checked.
#
# Usage: bash scripts/bench-executorch.sh [--smoke] [--repeat N] [--threads 1,2]
#            [--programs llm_q4,fc_stack,...] [--programs-dir DIR] [--runs N] [--json FILE]
#            [--markdown FILE] [--keep]
#   --programs-dir DIR  where the programs are (else XNNCACHE_ET_PROGRAMS, else shared/executorch)
#   --smoke      1 repeat, 1 thread, 3 steady executes (all four programs)
#   --repeat N   fresh processes per row (default 7)
#   --threads    thread counts of ExecuTorch's threadpool (default 1,2)
#   --runs N     executes after the first, for the steady median (default 10)
#   --json FILE  the rows and ratios as one JSON document
#   --markdown FILE  the table docs/BENCHMARKS.md shows
#   --keep       keep the work folder (binaries, every run's JSON and stderr)
#   --modes      which rows (default none,heap,cold,warm,disk; `warm` needs `cold`
#                first, `disk` too). On tmpfs, which cannot drop a file's pages,
#                leave `disk` out: TMPDIR=/dev/shm bash scripts/bench-executorch.sh
#                --programs-dir /dev/shm/llm_1b --programs llm_1b --threads 2 --modes none,cold,warm
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo=$(pwd)
started=$SECONDS
log() { echo "bench-executorch: $*" >&2; }

repeat=7 threads=1,2 runs=10 json_out="" md_out="" keep="" programs_list="llm_q4,fc_stack,fc_qd8,cnn" smoke="" modes="none,heap,cold,warm,disk"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --smoke) smoke=1; repeat=1; threads=1; runs=3 ;;
    --repeat) repeat=$2; shift ;;
    --threads) threads=$2; shift ;;
    --runs) runs=$2; shift ;;
    --programs) programs_list=$2; shift ;;
    --programs-dir) export XNNCACHE_ET_PROGRAMS=$2; shift ;;
    --json) json_out=$2; shift ;;
    --markdown) md_out=$2; shift ;;
    --keep) keep=1 ;;
    --modes) modes=$2; shift ;;
    -h|--help) sed -n '2,56p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) log "unknown argument $1"; exit 2 ;;
  esac
  shift
done
[[ "$repeat" =~ ^[1-9][0-9]*$ ]] || { log "--repeat takes a positive number"; exit 2; }

source scripts/executorch-runner.sh   # ExecuTorch (cached), et_build_runners
programs="${XNNCACHE_ET_PROGRAMS:-$(dirname "$repo")/shared/executorch}"
[[ -d "$programs" ]] || { log "no programs folder $programs (set XNNCACHE_ET_PROGRAMS)"; exit 1; }
work=$(mktemp -d "${TMPDIR:-/tmp}/xnncache-et-bench.XXXXXX")
if [[ -n "$keep" ]]; then log "keeping $work"; else trap 'rm -rf "$work"' EXIT; fi
et_build_runners "$work/bin"
log "ExecuTorch and the runners ready after $((SECONDS - started)) s"

failures=0
fail() { log "FAIL: $*"; failures=$((failures + 1)); }

# run PROG THREADS BUILD MODE REP: one fresh process; its JSON line and
# stderr go to $work/runs/PROG.tTHREADS.BUILD.MODE.REP.{json,err}.
mkdir -p "$work/runs" "$work/files"
run() {
  local prog=$1 t=$2 build=$3 mode=$4 rep=$5 rc=0
  local base="$work/runs/$prog.t$t.$build.$mode.$rep"
  local args=("$programs/$prog.pte" "$programs/$prog.input.bin" "$programs/$prog.expected.bin")
  case "$mode" in
    none|heap) args+=("$mode") ;;
    cold|warm|disk) args+=(file "$work/files/$prog.t$t.$build.$rep.cache") ;;
  esac
  if [[ $mode == disk ]] && ! python3 scripts/evict.py "$programs/$prog.pte" "${args[4]}" 2>>"$work/evict.log"; then
    fail "$prog: could not drop the program and the cache file from the page cache"
  fi
  "$work/bin/runner-$build" "${args[@]}" --runs "$runs" --threads "$t" --out "$base.out" >"$base.json" 2>"$base.err" || rc=$?
  if [[ $rc -ne 0 ]]; then
    fail "$prog, $t thread(s), $build $mode ($rep): runner exited $rc$([[ $rc -eq 1 ]] && echo ' (output differs from expected.bin)'): $(tail -2 "$base.err" | tr '\n' ' ')"
  elif ! cmp -s "$base.out" "$programs/$prog.expected.bin"; then
    fail "$prog, $t thread(s), $build $mode ($rep): output differs from $prog.expected.bin"
  fi
  # The cache file's size once the process is gone (a class may trim or
  # extend it when it closes).
  if [[ $mode == cold || $mode == warm || $mode == disk ]]; then
    stat -c %s "${args[4]}" >"$base.size" 2>/dev/null || echo -1 >"$base.size"
  fi
}

IFS=, read -r -a prog_arr <<<"$programs_list"
IFS=, read -r -a thread_arr <<<"$threads"
for prog in "${prog_arr[@]}"; do
  [[ -f "$programs/$prog.pte" ]] || { fail "$programs/$prog.pte missing"; continue; }
  for t in "${thread_arr[@]}"; do
    t0=$SECONDS
    for rep in $(seq 1 "$repeat"); do
      # The two builds take turns, in alternating order, so that a drift of
      # the machine (other work, the page cache) falls on both.
      if (( rep % 2 )); then order=(stock xnncache); else order=(xnncache stock); fi
      for mode in ${modes//,/ }; do
        for build in "${order[@]}"; do
          run "$prog" "$t" "$build" "$mode" "$rep"
        done
      done
      rm -f "$work/files/$prog.t$t."*".$rep.cache"
    done
    log "$prog, $t thread(s): $repeat x $(( $(tr ',' '\n' <<<"$modes" | wc -l) * 2 )) processes in $((SECONDS - t0)) s"
  done
done

report_args=("$work/runs" --programs "$programs_list" --threads "$threads" --repeat "$repeat" --runs "$runs" --modes "$modes")
[[ -n "$json_out" ]] && report_args+=(--json "$json_out")
[[ -n "$md_out" ]] && report_args+=(--markdown "$md_out")
python3 scripts/bench-executorch.py "${report_args[@]}"
log "done in $((SECONDS - started)) s$([[ -n "$smoke" ]] && echo ' (smoke size)')"
if [[ $failures -ne 0 ]]; then
  log "$failures failure(s)"
  exit 1
fi
