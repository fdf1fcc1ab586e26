#!/usr/bin/env bash
# The reliability battery of issue 12 (see RELIABILITY.md), with its figures
# printed as a table and written as JSON (target/reliability/figures.json).
#
#   scripts/reliability.sh              smoke sizes (what `cargo test` runs)
#   scripts/reliability.sh --full       full sizes: corruption, kills, races,
#                                       fuzzing (10 million executions) and
#                                       the >4 GiB file; about an hour on 2 cores
#   scripts/reliability.sh --fuzz[=N]   only the fuzzer, N executions (default 10,000,000)
#   scripts/reliability.sh --big        only the >4 GiB file (needs ~10 GB of disk, deleted after)
#   scripts/reliability.sh --sanitizers the C/C++ programs and the Rust tests under
#                                       AddressSanitizer/UBSan (nightly) and valgrind memcheck
#   scripts/reliability.sh --parts=corruption,kills,races   a subset of the series
#   --no-fuzz, --no-big                 with --full: leave those two out
#
# XNNCACHE_BATTERY_SEED=N fixes the random series' seed (default: a fresh
# one, printed). XNNCACHE_BATTERY_<NAME>=N overrides one size (see
# tests/common/battery.rs and each test file). Heavy steps run under nice.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/pin-env.sh

full=0 fuzz_runs="" big=0 sanitizers=0 parts="corruption,kills,races,fuzz_corpus,bigfiles"
for arg in "$@"; do
    case "$arg" in
        --full) full=1; fuzz_runs=${fuzz_runs:-10000000}; big=${big/0/1} ;;
        --no-fuzz) fuzz_runs=none ;;
        --no-big) big=no ;;
        --fuzz) fuzz_runs=10000000; parts="" ;;
        --fuzz=*) fuzz_runs=${arg#--fuzz=}; parts="" ;;
        --big) big=1; parts="" ;;
        --sanitizers) sanitizers=1; parts="" ;;
        --parts=*) parts=${arg#--parts=} ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) echo "reliability: unknown argument $arg" >&2; exit 2 ;;
    esac
done

bash scripts/install-deps.sh >/dev/null
target_dir=$(realpath -m "${CARGO_TARGET_DIR:-target}")
out_dir="$target_dir/reliability"
mkdir -p "$out_dir"
figures="$out_dir/figures.jsonl"
: > "$figures"
export XNNCACHE_BATTERY_OUT="$figures"
export XNNCACHE_BATTERY_SEED=${XNNCACHE_BATTERY_SEED:-$(( (RANDOM << 15) | RANDOM ))}
echo "reliability: seed $XNNCACHE_BATTERY_SEED, sizes $([[ $full = 1 ]] && echo full || echo smoke)"
if [[ $full = 1 ]]; then
    export XNNCACHE_BATTERY=full
fi

# The series: each a test file of tests/, at the size chosen above.
if [[ -n "$parts" ]]; then
    IFS=, read -ra list <<<"$parts"
    args=()
    for p in "${list[@]}"; do args+=(--test "$p"); done
    nice -n 10 cargo test -p xnncache-tests "${args[@]}" -- --test-threads=1
fi

# The file past 4 GiB (an #[ignore]d test: it writes ~5 GiB, then deletes it).
if [[ $big == 1 ]]; then
    XNNCACHE_BATTERY=full nice -n 10 cargo test -p xnncache-tests --test bigfiles -- --ignored --test-threads=1 --nocapture
fi

# Coverage-guided fuzzing of open-and-validate (fuzz/), seeded with real
# cache files; the kept corpus (fuzz/corpus/open_validate) is replayed on
# stable by tests/fuzz_corpus.rs.
if [[ -n "$fuzz_runs" && "$fuzz_runs" != none ]]; then
    command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
    toolchain=()
    if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then toolchain=(+nightly); else export RUSTC_BOOTSTRAP=1; fi
    work="$target_dir/fuzz-work"
    rm -rf "$work/seeds" "$work/artifacts" "$work/min"
    mkdir -p "$work/seeds" "$work/corpus" "$work/artifacts" "$work/min"
    T_SEEDS_DIR="$work/seeds" cargo test -p xnncache-tests --test fuzz_corpus -- --ignored write_fuzz_seeds --test-threads=1
    cp fuzz/corpus/open_validate/* "$work/corpus/"
    cp "$work/seeds"/* "$work/corpus/"
    # Without a sanitizer: three times the executions per second. The
    # harness's own checks (and SIGSEGV / SIGBUS) are what it looks for; the
    # code under test reads the file through mappings, which ASan does not watch.
    (cd fuzz && nice -n 10 cargo "${toolchain[@]}" fuzz build -O -s none open_validate)
    bin="fuzz/target/x86_64-unknown-linux-gnu/release/open_validate"
    started=$SECONDS
    status=0
    nice -n 10 "$bin" "$work/corpus" -runs="$fuzz_runs" -artifact_prefix="$work/artifacts/" -print_final_stats=1 \
        -close_fd_mask=1 2> "$work/fuzz.log" || status=$?
    seconds=$((SECONDS - started))
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$work/fuzz.log" | grep -o '[0-9]*$' || echo 0)
    crashes=$(find "$work/artifacts" -type f | wc -l)
    # Minimise into the kept corpus's folder of the work tree.
    nice -n 10 "$bin" -merge=1 "$work/min" "$work/corpus" 2>> "$work/fuzz.log" >/dev/null
    # What the repository keeps: the smallest of those, up to 300 KB.
    rm -rf "$work/keep" && mkdir -p "$work/keep"
    find "$work/min" -type f -printf '%s %p\n' | sort -n | awk '{s += $1; if (s <= 300000) print $2}' | xargs -r cp -t "$work/keep"
    kept=$(find "$work/keep" -type f | wc -l)
    kept_bytes=$(du -sb "$work/keep" | cut -f1)
    echo "{\"part\":\"fuzz\",\"size\":\"${fuzz_runs} runs\",\"executions\":${execs:-0},\"crashes\":$crashes,\"exit_status\":$status,\"seconds\":$seconds,\"corpus_files\":$(find "$work/corpus" -type f | wc -l),\"minimised_files\":$(find "$work/min" -type f | wc -l),\"kept_files\":$kept,\"kept_bytes\":$kept_bytes}" >> "$figures"
    echo "reliability: fuzzing done: $execs executions, $crashes crashes (artifacts in $work/artifacts); minimised corpus in $work/min, its smallest files in $work/keep ($kept files, $kept_bytes bytes)"
    echo "reliability: to keep them: rm -f fuzz/corpus/open_validate/* && cp $work/keep/* fuzz/corpus/open_validate/"
fi

if [[ $sanitizers = 1 ]]; then
    bash scripts/sanitizers.sh | tee "$out_dir/sanitizers.txt"
fi

# The figures: a table, then the JSON.
python3 - "$figures" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
for r in rows:
    print(f"== {r['part']} ({r['size']})")
    for k, v in r.items():
        if k in ("part", "size"):
            continue
        if k == "kinds":
            for kind in str(v).split("; "):
                print(f"   {kind}")
            continue
        print(f"   {k:<42} {v}")
json.dump(rows, open(sys.argv[1].replace(".jsonl", ".json"), "w"), indent=1)
print(json.dumps(rows))
EOF
echo "reliability: figures in $out_dir/figures.json"
