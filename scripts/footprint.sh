#!/usr/bin/env bash
# What libxnncache.a adds to an app, per target, measured the way a new user
# would: tests/c/footprint/footprint.c (every function of the C API and every
# provider slot) linked with the app build of the library
# (scripts/mobile-build.sh), and again with tests/c/footprint/stub.c (the
# same symbols, doing nothing) in its place, both with
#   gcc -O2 -ffunction-sections -fdata-sections -Wl,--gc-sections
# (what Android's builds use), then stripped. The footprint is the difference.
# The program then runs (natively, or under qemu-aarch64) and must report
# that every call returned what it should. Fails when a footprint passes the
# budget, 200 KB (200,000 bytes).
#
# Usage: scripts/footprint.sh [x86_64|aarch64 ...]   (default: both)
#   XNNCACHE_FOOTPRINT_BUDGET=bytes overrides the budget.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

budget=${XNNCACHE_FOOTPRINT_BUDGET:-200000}
arches=("$@")
[[ ${#arches[@]} -gt 0 ]] || arches=(x86_64 aarch64)

source scripts/mobile-build.sh
for a in "${arches[@]}"; do
    [[ $a == aarch64 ]] && bash scripts/install-platform-deps.sh aarch64 >/dev/null
done
mobile_setup

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
over=()
printf '%-8s %12s %12s %12s\n' target "with lib" "with stub" footprint
for a in "${arches[@]}"; do
    case "$a" in
        x86_64) target=x86_64-unknown-linux-gnu cc=gcc strip=strip run=() ;;
        aarch64) target=aarch64-unknown-linux-gnu cc=aarch64-linux-gnu-gcc strip=aarch64-linux-gnu-strip
                 run=(qemu-aarch64 -L /usr/aarch64-linux-gnu) ;;
        *) echo "footprint: unknown target $a (x86_64 or aarch64)" >&2; exit 2 ;;
    esac
    lib=$(mobile_build "$target")
    flags=(-O2 -ffunction-sections -fdata-sections -Iinclude -Itests/c/footprint)
    "$cc" "${flags[@]}" tests/c/footprint/footprint.c "$lib" -Wl,--gc-sections -lpthread -ldl -lm -o "$work/with-lib-$a"
    "$cc" "${flags[@]}" tests/c/footprint/footprint.c tests/c/footprint/stub.c -Wl,--gc-sections -o "$work/with-stub-$a"
    "$strip" "$work/with-lib-$a" "$work/with-stub-$a"
    with=$(stat -c %s "$work/with-lib-$a")
    without=$(stat -c %s "$work/with-stub-$a")
    size=$((with - without))
    printf '%-8s %12d %12d %12d bytes (%d KB)\n' "$a" "$with" "$without" "$size" $(((size + 500) / 1000))
    # The small build must still work: every call, a file written and reused.
    TMPDIR="$work" "${run[@]}" "$work/with-lib-$a" >/dev/null
    [[ $size -le $budget ]] || over+=("$a: $size bytes")
done
if [[ ${#over[@]} -gt 0 ]]; then
    echo "footprint: over the budget of $budget bytes: ${over[*]}" >&2
    exit 1
fi
echo "footprint: every target within $budget bytes"
