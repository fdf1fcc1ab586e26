#!/usr/bin/env bash
# Runs the core crate's unit tests (cargo test -p xnncache --lib) on another
# target, with Debian's Rust toolchain building the standard library from
# source (-Zbuild-std: no per-target download):
#
#   i686      i686-unknown-linux-gnu, 32-bit, natively (the kernel runs
#             i386 programs; Debian's i686 cross gcc links them)
#   aarch64   aarch64-unknown-linux-gnu under qemu-user
#   windows   x86_64-pc-windows-gnu under Wine (mingw-w64 links it), the
#             file-backed arena included
#
# Usage: scripts/test-cross.sh i686|aarch64|windows [extra cargo test args]
# Build directory: <build cache>/cargo/cross (kept between runs).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

kind=${1:?usage: test-cross.sh i686|aarch64|windows}
shift
bash scripts/install-platform-deps.sh toolchain "$kind"

export PATH="/usr/bin:$PATH" RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc
unset RUSTUP_TOOLCHAIN RUSTC_WRAPPER RUSTC_WORKSPACE_WRAPPER
# Outside the work tree, so that a fresh clone (as CI makes) reuses the
# standard library built for each target.
build_cache="${XNNCACHE_BUILD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/xnncache}"
export RUSTC_BOOTSTRAP=1 CARGO_TARGET_DIR="$build_cache/cargo/cross"

case "$kind" in
    i686)
        target=i686-unknown-linux-gnu
        export CARGO_TARGET_I686_UNKNOWN_LINUX_GNU_LINKER=i686-linux-gnu-gcc
        # The cross tree's own loader and libraries (mixing its libc with
        # another build's loader hangs in pthread_create).
        export CARGO_TARGET_I686_UNKNOWN_LINUX_GNU_RUNNER="/usr/i686-linux-gnu/lib/ld-linux.so.2 --library-path /usr/i686-linux-gnu/lib"
        ;;
    aarch64)
        target=aarch64-unknown-linux-gnu
        export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
        export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu"
        ;;
    windows)
        target=x86_64-pc-windows-gnu
        export CARGO_TARGET_X86_64_PC_WINDOWS_GNU_LINKER=x86_64-w64-mingw32-gcc
        export CARGO_TARGET_X86_64_PC_WINDOWS_GNU_RUNNER=/usr/lib/wine/wine64
        # A Wine prefix of our own, made once; no Mono or Gecko prompts.
        export WINEPREFIX="$CARGO_TARGET_DIR/wine" WINEDEBUG=-all WINEDLLOVERRIDES="mscoree,mshtml="
        if [[ ! -f "$WINEPREFIX/system.reg" ]]; then
            mkdir -p "$WINEPREFIX"
            # The first start sets the prefix up (its complaint about the
            # missing 32-bit rundll32 is harmless: we run 64-bit only).
            /usr/lib/wine/wine64 wineboot --init >/dev/null 2>&1 || true
            /usr/lib/wine/wineserver -w || true
        fi
        # Rust's std (1.78 on) imports ProcessPrng from bcryptprimitives.dll,
        # which Debian 12's Wine 8.0 lacks. A shim DLL in the prefix gives it,
        # over RtlGenRandom; a Windows that has the DLL never sees this.
        sys32="$WINEPREFIX/drive_c/windows/system32"
        if [[ ! -f "$sys32/bcryptprimitives.dll" ]]; then
            shim="$CARGO_TARGET_DIR/wine-shim"
            mkdir -p "$shim"
            cat >"$shim/bcryptprimitives.c" <<'C'
#include <windows.h>
#include <ntsecapi.h>
BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len) {
    while (len > 0) {
        ULONG n = len > 0x40000000 ? 0x40000000 : (ULONG) len;
        if (!RtlGenRandom(data, n)) return FALSE;
        data += n;
        len -= n;
    }
    return TRUE;
}
C
            printf 'LIBRARY bcryptprimitives.dll\nEXPORTS\n    ProcessPrng\n' >"$shim/bcryptprimitives.def"
            x86_64-w64-mingw32-gcc -shared -O2 -o "$sys32/bcryptprimitives.dll" \
                "$shim/bcryptprimitives.c" "$shim/bcryptprimitives.def" -ladvapi32
        fi
        ;;
    *) echo "test-cross: unknown target kind $kind" >&2; exit 2 ;;
esac

start=$SECONDS
nice -n 10 /usr/bin/cargo test -p xnncache --lib --target "$target" -Zbuild-std "$@"
echo "test-cross: $target: unit tests passed ($((SECONDS - start)) s)"
