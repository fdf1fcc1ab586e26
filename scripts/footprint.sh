#!/usr/bin/env bash
# What libxnncache.a adds to an app, per target, measured the way a new user
# would: tests/c/footprint/footprint.c (every function of the C API and every
# provider slot) linked with the app build of the library
# (scripts/mobile-build.sh), and again with tests/c/footprint/stub.c (the
# same symbols, doing nothing) in its place, both with
#   gcc -O2 -ffunction-sections -fdata-sections -Wl,--gc-sections
# (what Android's builds use), then stripped. The footprint is the difference
# of the two stripped programs' contents: the bytes of their sections, not
# counting the padding the linker puts between segments (a whole page, up to
# 64 KiB on aarch64, which would make the difference of the file sizes jump
# by pages). The file sizes' difference is printed too.
#
# The program then runs (natively, or under qemu-aarch64) and must report
# that every call returned what it should. On x86-64, the places where the
# app build can panic (and so abort) are listed and compared with
# scripts/mobile/panic-sites.txt, whose every line says why no input reaches
# them (scripts/mobile-panics.py; RELIABILITY.md#the-app-build-aborts-on-a-panic).
# Fails when a footprint passes the budget, 200 KB (200,000 bytes), or when
# the list of panic sites changed.
#
# Usage: scripts/footprint.sh [x86_64|aarch64 ...]   (default: both)
#   XNNCACHE_FOOTPRINT_BUDGET=bytes   another budget
#   XNNCACHE_MOBILE_PANIC=unwind      the build whose panics unwind (no budget,
#                                     no panic-site list: the figure only)
#   XNNCACHE_FOOTPRINT_LIB=archive    measure this x86-64 libxnncache.a instead
#   XNNCACHE_FOOTPRINT_GC=0           link without -ffunction-sections,
#                                     -fdata-sections and --gc-sections
#   (those two reproduce the first measurement: docs/BENCHMARKS.md#footprint)
#   XNNCACHE_FOOTPRINT_KEEP=dir       keeps the unstripped programs there
#                                     (program-<target>), e.g. to update the
#                                     panic-site list
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

budget=${XNNCACHE_FOOTPRINT_BUDGET:-200000}
arches=("$@")
[[ ${#arches[@]} -gt 0 ]] || arches=(x86_64 aarch64)
given=${XNNCACHE_FOOTPRINT_LIB:-}
gc=${XNNCACHE_FOOTPRINT_GC:-1}
unwind=0
[[ ${XNNCACHE_MOBILE_PANIC:-abort} == unwind ]] && unwind=1
# Only the app build (abort) answers to the budget and the panic-site list.
checked=1
[[ -n $given || $gc == 0 || $unwind == 1 ]] && checked=0

source scripts/mobile-build.sh
for a in "${arches[@]}"; do
    [[ $a == aarch64 ]] && bash scripts/install-platform-deps.sh aarch64 >/dev/null
done
[[ -n $given ]] || mobile_setup

# The bytes a file's sections hold (allocated ones: what is loaded).
content() {
    readelf -SW "$1" | python3 -c '
import re, sys
total = 0
for line in sys.stdin:
    m = re.match(r"\s*\[\s*\d+\]\s+\S+\s+(\S+)\s+[0-9a-f]+\s+[0-9a-f]+\s+([0-9a-f]+)\s+\S+\s+(\S+)", line)
    if m and m.group(1) != "NOBITS" and "A" in m.group(3):
        total += int(m.group(2), 16)
print(total)'
}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
over=()
printf '%-8s %12s %12s %12s %12s\n' target "with lib" "with stub" "file diff" footprint
for a in "${arches[@]}"; do
    case "$a" in
        x86_64) target=x86_64-unknown-linux-gnu cc=gcc strip=strip run=() ;;
        aarch64) target=aarch64-unknown-linux-gnu cc=aarch64-linux-gnu-gcc strip=aarch64-linux-gnu-strip
                 run=(qemu-aarch64 -L /usr/aarch64-linux-gnu) ;;
        *) echo "footprint: unknown target $a (x86_64 or aarch64)" >&2; exit 2 ;;
    esac
    if [[ -n $given ]]; then
        [[ $a == x86_64 ]] || { echo "footprint: XNNCACHE_FOOTPRINT_LIB is an x86-64 archive" >&2; exit 2; }
        lib=$given
    else
        lib=$(mobile_build "$target")
    fi
    flags=(-O2 -Iinclude -Itests/c/footprint) gcflags=()
    if [[ $gc != 0 ]]; then
        flags+=(-ffunction-sections -fdata-sections) gcflags=(-Wl,--gc-sections)
    fi
    "$cc" "${flags[@]}" tests/c/footprint/footprint.c "$lib" "${gcflags[@]}" -lpthread -ldl -lm -o "$work/with-lib-$a"
    "$cc" "${flags[@]}" tests/c/footprint/footprint.c tests/c/footprint/stub.c "${gcflags[@]}" -o "$work/with-stub-$a"
    cp "$work/with-lib-$a" "$work/unstripped-$a"
    if [[ -n ${XNNCACHE_FOOTPRINT_KEEP:-} ]]; then
        mkdir -p "$XNNCACHE_FOOTPRINT_KEEP"
        cp "$work/with-lib-$a" "$XNNCACHE_FOOTPRINT_KEEP/program-$a"
    fi
    "$strip" "$work/with-lib-$a" "$work/with-stub-$a"
    with=$(content "$work/with-lib-$a")
    without=$(content "$work/with-stub-$a")
    size=$((with - without))
    files=$(($(stat -c %s "$work/with-lib-$a") - $(stat -c %s "$work/with-stub-$a")))
    printf '%-8s %12d %12d %12d %12d bytes (%d KB)\n' "$a" "$with" "$without" "$files" "$size" $(((size + 500) / 1000))
    # The small build must still work: every call, a file written and reused.
    TMPDIR="$work" "${run[@]}" "$work/with-lib-$a" >/dev/null
    if [[ $checked == 1 ]]; then
        [[ $size -le $budget ]] || over+=("$a: $size bytes")
        if [[ $a == x86_64 ]]; then
            python3 scripts/mobile-panics.py check "$work/unstripped-$a" scripts/mobile/panic-sites.txt
        fi
    fi
done
if [[ ${#over[@]} -gt 0 ]]; then
    echo "footprint: over the budget of $budget bytes: ${over[*]}" >&2
    exit 1
fi
if [[ $checked == 1 ]]; then
    echo "footprint: every target within $budget bytes"
fi
