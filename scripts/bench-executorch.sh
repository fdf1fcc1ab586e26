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
#   --phonefs [DIR]  phone-class storage: the programs are copied to, and the
#                cache files made on, a file system whose page cache holds
#                4 KiB folios only, as on Android's f2fs and ext4 before Linux
#                6.16 (issue 27). Without DIR (root and a loop device needed):
#                a 4 GiB ext4 image in XNNCACHE_PHONEFS_IMAGE_DIR (default
#                TMPDIR or /tmp), attached with `losetup --direct-io=on` (real
#                reads, no second copy in the host's page cache) and mounted
#                `-o data=journal` (no large folios on any kernel); unmounted,
#                detached and deleted at the end. With DIR: a file system
#                already mounted there. Either way a probe maps a 64 MiB file
#                there and prints its FilePmdMapped (0 kB: 4 KiB folios; a
#                warning otherwise), and each process's reads of the block
#                device (requests, sectors, from /sys/block/DEV/stat) are
#                reported beside the bytes of /proc/self/io.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo=$(pwd)
started=$SECONDS
log() { echo "bench-executorch: $*" >&2; }

repeat=7 threads=1,2 runs=10 json_out="" md_out="" keep="" programs_list="llm_q4,fc_stack,fc_qd8,cnn" smoke="" modes="none,heap,cold,warm,disk"
phonefs="" phonefs_dir=""
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
    --phonefs)
      phonefs=1
      if [[ $# -gt 1 && $2 != -* ]]; then phonefs_dir=$2; shift; fi ;;
    -h|--help) sed -n '2,70p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) log "unknown argument $1"; exit 2 ;;
  esac
  shift
done
[[ "$repeat" =~ ^[1-9][0-9]*$ ]] || { log "--repeat takes a positive number"; exit 2; }

programs="${XNNCACHE_ET_PROGRAMS:-$(dirname "$repo")/shared/executorch}"
[[ -d "$programs" ]] || { log "no programs folder $programs (set XNNCACHE_ET_PROGRAMS)"; exit 1; }

# --- phone-class storage (--phonefs): checked and set up before any build,
# so that a machine without root or loop devices fails at once.
phone_img="" phone_dev="" phone_mnt="" phone_mounted="" blk_stat=""
phonefs_cleanup() {
  if [[ -n "$phone_mounted" ]]; then
    umount "$phone_mnt" || log "could not unmount $phone_mnt"
    phone_mounted=""
  fi
  if [[ -n "$phone_dev" ]]; then
    losetup -d "$phone_dev" || log "could not detach $phone_dev"
    phone_dev=""
  fi
  if [[ -n "$phone_mnt" ]]; then rmdir "$phone_mnt" 2>/dev/null || true; fi
  if [[ -n "$phone_img" ]]; then rm -f "$phone_img"; phone_img=""; fi
  return 0
}
work=""
cleanup() {
  if [[ -n "$work" && -z "$keep" ]]; then rm -rf "$work"; fi
  if [[ -n "$phonefs" && -z "$phonefs_dir" ]]; then phonefs_cleanup; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
if [[ -n "$phonefs" ]]; then
  if [[ -n "$phonefs_dir" ]]; then
    [[ -d "$phonefs_dir" && -w "$phonefs_dir" ]] || { log "--phonefs $phonefs_dir: not a writable folder"; exit 1; }
    phone_mnt=$(cd "$phonefs_dir" && pwd)
    src=$(findmnt -n -o SOURCE --target "$phone_mnt" 2>/dev/null || true)
  else
    [[ $(id -u) -eq 0 ]] || { log "--phonefs without a folder makes a loop-mounted ext4 image: it needs root (or pass --phonefs DIR, a file system mounted already)"; exit 1; }
    for tool in losetup mkfs.ext4 mount umount fallocate; do
      command -v "$tool" >/dev/null || { log "--phonefs needs $tool (Debian: util-linux, e2fsprogs)"; exit 1; }
    done
    [[ -e /dev/loop-control ]] || { log "--phonefs needs loop devices (no /dev/loop-control: modprobe loop, or pass --phonefs DIR)"; exit 1; }
    img_dir=${XNNCACHE_PHONEFS_IMAGE_DIR:-${TMPDIR:-/tmp}}
    free_kib=$(df -Pk "$img_dir" | awk 'NR == 2 { print $4 }')
    (( free_kib > 4 * 1024 * 1024 + 65536 )) || { log "--phonefs: $img_dir has $((free_kib / 1024)) MiB free, the image takes 4 GiB (set XNNCACHE_PHONEFS_IMAGE_DIR)"; exit 1; }
    phone_img=$(mktemp "$img_dir/xnncache-phonefs.XXXXXX.img")
    fallocate -l 4G "$phone_img"
    mkfs.ext4 -q -F "$phone_img"
    phone_dev=$(losetup --direct-io=on -f --show "$phone_img") || { phone_dev=""; log "--phonefs: losetup failed (no free loop device?)"; exit 1; }
    if [[ $(cat "/sys/block/$(basename "$phone_dev")/loop/dio" 2>/dev/null) != 1 ]]; then
      log "--phonefs: $phone_dev did not take direct I/O: its reads may come from the host's page cache"
    fi
    phone_mnt=$(mktemp -d "${TMPDIR:-/tmp}/xnncache-phonefs.XXXXXX")
    mount -o data=journal "$phone_dev" "$phone_mnt" || { log "--phonefs: mount -o data=journal $phone_dev failed"; exit 1; }
    phone_mounted=1
    src=$phone_dev
    log "phone-class storage: $phone_img on $phone_dev (direct I/O), ext4 data=journal at $phone_mnt"
  fi
  # The block device whose requests each process is charged with.
  if [[ $src == /dev/* && -r "/sys/class/block/$(basename "$src")/stat" ]]; then
    blk_stat="/sys/class/block/$(basename "$src")/stat"
  else
    log "--phonefs: no block device statistics for ${src:-$phone_mnt} (requests not reported)"
  fi
  # Large folios or not: a 64 MiB file mapped and read there.
  pmd_kib=$(python3 - "$phone_mnt/xnncache-folio-probe" <<'PY'
import mmap, os, sys
path = sys.argv[1]
size = 64 << 20
with open(path, "wb") as f:
    for _ in range(size >> 20):
        f.write(os.urandom(1 << 20))
    f.flush()
    os.fsync(f.fileno())
fd = os.open(path, os.O_RDONLY)
os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
m = mmap.mmap(fd, size, prot=mmap.PROT_READ)
sum(m[i] for i in range(0, size, 4096))
pmd, ours = 0, False
for line in open("/proc/self/smaps"):
    if "-" in line.split(" ", 1)[0]:
        ours = line.rstrip().endswith(path)
    elif ours and line.startswith("FilePmdMapped:"):
        pmd += int(line.split()[1])
m.close()
os.close(fd)
os.unlink(path)
print(pmd)
PY
  )
  if [[ $pmd_kib == 0 ]]; then
    log "phone-class storage: a 64 MiB file mapped there has FilePmdMapped 0 kB (4 KiB folios)"
  else
    log "WARNING: a 64 MiB file mapped on $phone_mnt has FilePmdMapped ${pmd_kib} kB: large folios, not a phone's page cache"
  fi
  mkdir -p "$phone_mnt/programs" "$phone_mnt/files"
  IFS=, read -r -a _progs <<<"$programs_list"
  for prog in "${_progs[@]}"; do
    for f in "$prog.pte" "$prog.input.bin" "$prog.expected.bin"; do
      [[ -f "$programs/$f" ]] || continue
      if [[ ! -f "$phone_mnt/programs/$f" ]] || ! cmp -s "$programs/$f" "$phone_mnt/programs/$f"; then
        cp "$programs/$f" "$phone_mnt/programs/$f"
      fi
    done
  done
  sync -f "$phone_mnt"
  programs="$phone_mnt/programs"
  log "programs copied to $programs"
fi

source scripts/executorch-runner.sh   # ExecuTorch (cached), et_build_runners
work=$(mktemp -d "${TMPDIR:-/tmp}/xnncache-et-bench.XXXXXX")
if [[ -n "$keep" ]]; then log "keeping $work"; fi
et_build_runners "$work/bin"
log "ExecuTorch and the runners ready after $((SECONDS - started)) s"

failures=0
fail() { log "FAIL: $*"; failures=$((failures + 1)); }

# run PROG THREADS BUILD MODE REP: one fresh process; its JSON line and
# stderr go to $work/runs/PROG.tTHREADS.BUILD.MODE.REP.{json,err}.
mkdir -p "$work/runs" "$work/files"
files="$work/files"
[[ -n "$phonefs" ]] && files="$phone_mnt/files"
run() {
  local prog=$1 t=$2 build=$3 mode=$4 rep=$5 rc=0
  local base="$work/runs/$prog.t$t.$build.$mode.$rep"
  local args=("$programs/$prog.pte" "$programs/$prog.input.bin" "$programs/$prog.expected.bin")
  case "$mode" in
    none|heap) args+=("$mode") ;;
    cold|warm|disk) args+=(file "$files/$prog.t$t.$build.$rep.cache") ;;
  esac
  # On the phone-class file system every process starts on a quiet device:
  # the previous process's writes (a stock cold process's journaled MS_SYNC,
  # checkpointed afterwards) are flushed first, untimed, so that no process
  # is charged with another's writes.
  if [[ -n "$phonefs" ]]; then sync -f "$phone_mnt"; fi
  if [[ $mode == disk ]] && ! python3 scripts/evict.py "$programs/$prog.pte" "${args[4]}" 2>>"$work/evict.log"; then
    fail "$prog: could not drop the program and the cache file from the page cache"
  fi
  local blk_before=""
  if [[ -n "$blk_stat" ]]; then blk_before=$(<"$blk_stat"); fi
  "$work/bin/runner-$build" "${args[@]}" --runs "$runs" --threads "$t" --out "$base.out" >"$base.json" 2>"$base.err" || rc=$?
  # The block device's counters over the process (/sys/block/DEV/stat:
  # reads completed, merged, sectors, ms; writes the same), the difference.
  if [[ -n "$blk_stat" ]]; then
    paste -d' ' <(tr -s ' ' '\n' <<<"$blk_before" | grep .) <(tr -s ' ' '\n' <"$blk_stat" | grep .) |
      awk '{ printf "%s%d", (NR > 1 ? " " : ""), $2 - $1 } END { print "" }' >"$base.blk"
  fi
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
      rm -f "$files/$prog.t$t."*".$rep.cache"
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
