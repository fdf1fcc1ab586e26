#!/usr/bin/env bash
# Installs the system tools that building XNNPACK from source needs
# (see xnnpack-sys/build.rs): cmake, ninja, python3, a C/C++ compiler,
# libclang (for bindgen), curl and xz. Idempotent: installs only what is
# missing, and runs `apt-get update` only when something is.
set -euo pipefail

missing=()

have() { command -v "$1" >/dev/null 2>&1; }

# libclang: bindgen loads libclang.so (the C API; libclang-cpp is something else)
# at build time. LIBCLANG_PATH may point at the folder holding it.
have_libclang() {
    local dir
    for dir in "${LIBCLANG_PATH:-}" /usr/lib/llvm-*/lib /usr/lib/*-linux-gnu /usr/lib /usr/local/lib; do
        [[ -n "$dir" && -d "$dir" ]] || continue
        if compgen -G "$dir/libclang.so*" >/dev/null || compgen -G "$dir/libclang-[0-9]*.so*" >/dev/null; then
            return 0
        fi
    done
    return 1
}

have cmake   || missing+=(cmake)
have ninja   || missing+=(ninja-build)
have python3 || missing+=(python3)
have cc      || have gcc || missing+=(gcc)
have c++     || have g++ || missing+=(g++)
have curl    || missing+=(curl)
have xz      || missing+=(xz-utils)
have_libclang || missing+=(libclang-dev)

if [[ ${#missing[@]} -eq 0 ]]; then
    echo "install-deps: all build tools present (cmake, ninja, python3, cc, c++, curl, xz, libclang)"
    exit 0
fi

echo "install-deps: missing: ${missing[*]}"

if ! have apt-get; then
    echo "install-deps: apt-get not found; install these yourself: ${missing[*]}" >&2
    exit 1
fi

sudo=()
if [[ $(id -u) -ne 0 ]]; then
    if have sudo; then
        sudo=(sudo)
    else
        echo "install-deps: not root and sudo is missing; install these as root: ${missing[*]}" >&2
        exit 1
    fi
fi

export DEBIAN_FRONTEND=noninteractive
echo "install-deps: apt-get update"
"${sudo[@]}" apt-get update -q
echo "install-deps: apt-get install ${missing[*]}"
"${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
echo "install-deps: installed ${missing[*]}"
