#!/usr/bin/env bash
# Side by side on one file system, interleaved: stock and xnncache variants
# (environment settings), warm from disk and warm hot, ROUNDS rounds.
# usage: variants.sh BIN_DIR PROG_DIR PROG FILES_DIR ROUNDS THREADS OUT_DIR 'name=ENV ...' ...
set -uo pipefail
bin=$1 pdir=$2 prog=$3 files=$4 rounds=$5 threads=$6 out=$7; shift 7
variants=("$@")
mkdir -p "$out" "$files"
dev=$(findmnt -n -o SOURCE --target "$files"); blk=""
[[ $dev == /dev/* ]] && blk=/sys/class/block/$(basename "$dev")/stat
args=("$pdir/$prog.pte" "$pdir/$prog.input.bin" "$pdir/$prog.expected.bin")
# one cold run per class to make the files
rm -f "$files"/v.*.cache
"$bin/runner-stock" "${args[@]}" file "$files/v.stock.cache" --runs 1 --threads "$threads" > "$out/cold.stock.json" 2>/dev/null
"$bin/runner-xnncache" "${args[@]}" file "$files/v.xnncache.cache" --runs 1 --threads "$threads" > "$out/cold.xnncache.json" 2>/dev/null
cp "$files/v.xnncache.cache" "$files/v.main.cache"
sync
one() { # name build env mode round
  local name=$1 build=$2 envs=$3 mode=$4 r=$5 f="$files/v.$2.cache" b0="" 
  if [[ $mode == disk ]]; then python3 /work/wt-phone/scripts/evict.py "$pdir/$prog.pte" "$f" 2>/dev/null || echo "evict failed" >&2; fi
  [[ -n $blk ]] && b0=$(<"$blk")
  env $envs "$bin/runner-$build" "${args[@]}" file "$f" --runs 3 --threads "$threads" > "$out/$name.$mode.$r.json" 2>"$out/$name.$mode.$r.err"
  [[ -n $blk ]] && paste -d' ' <(tr -s ' ' '\n' <<<"$b0" | grep .) <(tr -s ' ' '\n' <"$blk" | grep .) | awk '{ printf "%s%d", (NR > 1 ? " " : ""), $2 - $1 } END { print "" }' > "$out/$name.$mode.$r.blk"
}
for r in $(seq 1 "$rounds"); do
  order=("${variants[@]}")
  if (( r % 2 == 0 )); then mapfile -t order < <(printf '%s\n' "${variants[@]}" | tac); fi
  for v in "${order[@]}"; do
    name=${v%%=*}; spec=${v#*=}; build=${spec%%:*}; envs=${spec#*:}
    for mode in ${MODES:-disk warm}; do
      one "$name" "$build" "$envs" "$mode" "$r"
    done
  done
done
python3 - "$out" "${variants[@]}" <<'PY'
import json, sys, statistics, glob, os
out = sys.argv[1]
names = [v.split("=", 1)[0] for v in sys.argv[2:]]
print(f"{'variant':22} {'mode':5} {'1st_out':>8} {'load_m':>8} {'1st_ex':>7} {'steady':>7} {'readMiB':>8} {'rd@load':>8} {'devreads':>8} {'KiB/rd':>7} {'pmdMiB':>7} ok")
for mode in ("disk", "warm"):
    for n in names:
        rows = []
        for p in sorted(glob.glob(f"{out}/{n}.{mode}.*.json")):
            try:
                d = json.loads(open(p).read().strip().splitlines()[-1])
            except Exception:
                continue
            b = None
            try:
                b = [int(x) for x in open(p[:-5] + ".blk").read().split()]
            except Exception:
                pass
            rows.append((d, b))
        if not rows:
            print(n, mode, "no runs"); continue
        med = lambda f: statistics.median([f(d, b) for d, b in rows])
        print(f"{n:22} {mode:5} {med(lambda d,b: d['first_output_ms']):8.1f} {med(lambda d,b: d['load_method_ms']):8.1f} "
              f"{med(lambda d,b: d['first_execute_ms']):7.1f} {med(lambda d,b: d['steady_execute_ms']):7.1f} "
              f"{med(lambda d,b: d['read_bytes']/2**20):8.1f} {med(lambda d,b: d['read_bytes_after_load']/2**20):8.1f} "
              f"{med(lambda d,b: b[0] if b else -1):8.0f} {med(lambda d,b: b[2]*512/1024/b[0] if b and b[0] else -1):7.0f} "
              f"{med(lambda d,b: d['end']['file_pmd']/1024):7.1f} {sum(d['identical'] for d,b in rows)}/{len(rows)}")
PY
