#!/usr/bin/env bash
# Builds what an Android or iOS app links, with the app build of
# scripts/mobile-build.sh (static archives: no NDK, no Xcode), and checks it:
#
#   OUTDIR/android/include/xnncache.h
#   OUTDIR/android/{arm64-v8a,armeabi-v7a,x86_64}/libxnncache.a
#   OUTDIR/android/xnncacheConfig.cmake     imported target xnncache::xnncache
#                                           for the app's ANDROID_ABI
#   OUTDIR/ios/xnncache.xcframework/        Info.plist, and per library:
#       ios-arm64/                          aarch64-apple-ios
#       ios-arm64_x86_64-simulator/         aarch64-apple-ios-sim + x86_64-apple-ios
#                                           (one universal archive)
#     each with libxnncache.a and Headers/{xnncache.h,module.modulemap}
#
# Checks: every member of each archive is an object of the right machine
# (`readelf -h` for Android; the Mach-O header, cputype and LC_BUILD_VERSION
# platform for iOS), every symbol the Android archives use and do not define
# is in bionic's libc/libm/libdl at API level 23 (scripts/android/, derived
# from bionic's symbol maps; API level 23 is the minSdk of ExecuTorch's
# Android library), is one of the unwinder's _Unwind_* (or, on 32-bit ARM,
# __gnu_unwind_frame; from the libunwind.a
# the NDK's clang links into every native library) or atexit (from the NDK's
# crtbegin objects), or is a weak reference the standard library does without
# when the device lacks it (getrandom before API level 28); and prints each
# archive's size.
#
# Usage: scripts/package-mobile.sh OUTDIR [--only android|ios|ABI...]
#   --only arm64-v8a    one Android ABI and its checks (CI runs them all)
# Cold: about 45 s per target on 2 cores, 258 s for all six (std is built
# from source); seconds once built (<build cache>/cargo/mobile).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

out=${1:?usage: package-mobile.sh OUTDIR [--only android|ios|ABI...]}
shift
only=()
if [[ ${1:-} == --only ]]; then
    shift
    only=("$@")
fi
wanted() {
    [[ ${#only[@]} -eq 0 ]] && return 0
    local w
    for w in "${only[@]}"; do
        [[ $w == "$1" || $w == "$2" ]] && return 0
    done
    return 1
}
API=23
declare -A android_target=([arm64-v8a]=aarch64-linux-android [armeabi-v7a]=armv7-linux-androideabi [x86_64]=x86_64-linux-android)
declare -A android_machine=([arm64-v8a]=AArch64 [armeabi-v7a]=ARM [x86_64]="Advanced Micro Devices X86-64")
declare -A android_class=([arm64-v8a]=ELF64 [armeabi-v7a]=ELF32 [x86_64]=ELF64)

source scripts/mobile-build.sh
mobile_setup
mkdir -p "$out"
out=$(cd "$out" && pwd)
# The header as the library builds it (build.rs writes it; CI checks that
# include/ matches).
header=include/xnncache.h

size_of() { stat -c %s "$1"; }
report=()

# Android.
for abi in arm64-v8a armeabi-v7a x86_64; do
    wanted android "$abi" || continue
    lib=$(mobile_build "${android_target[$abi]}")
    mkdir -p "$out/android/$abi" "$out/android/include"
    cp "$lib" "$out/android/$abi/libxnncache.a"
    cp "$header" "$out/android/include/xnncache.h"
    a="$out/android/$abi/libxnncache.a"
    # Every member: the ABI's machine and class.
    members=$(readelf -h "$a" | grep -c '^File:')
    good=$(readelf -h "$a" | grep -c "Machine: *${android_machine[$abi]}\$")
    class=$(readelf -h "$a" | grep -c "Class: *${android_class[$abi]}\$")
    if [[ $members -eq 0 || $good -ne $members || $class -ne $members ]]; then
        echo "package-mobile: $a: $good of $members members are ${android_class[$abi]} ${android_machine[$abi]}" >&2
        exit 1
    fi
    echo "package-mobile: $abi: $members members, all ${android_class[$abi]} ${android_machine[$abi]}"
    # _Unwind_* and, on 32-bit ARM, __gnu_unwind_frame (ARM EHABI's frame
    # step, which libunwind's unwind_arm_ehabi.h declares and C++'s ARM
    # personality uses too): the NDK's libunwind.a, linked into every library.
    # atexit: not exported by bionic's libc but compiled into every library
    # and program by the NDK's crtbegin objects (bionic's
    # libc/arch-common/bionic/atexit.h), so that a library's handlers go with it.
    python3 scripts/mobile-check.py undefined "$a" "scripts/android/bionic-api$API-$abi.txt" --also '_Unwind_[A-Za-z_]+|__gnu_unwind_frame' --also atexit
    report+=("android/$abi/libxnncache.a $(size_of "$a")")
done
if [[ -d "$out/android/include" ]]; then
    cat >"$out/android/xnncacheConfig.cmake" <<'CMAKE'
# xnncache for Android (made by scripts/package-mobile.sh): an imported
# target for the ABI being built. In the app's CMakeLists.txt:
#   set(xnncache_DIR <this folder>)
#   find_package(xnncache REQUIRED CONFIG)
#   target_link_libraries(app PRIVATE xnncache::xnncache)
# xnncache.h includes <xnnpack.h>: link XNNPACK (ExecuTorch's) too.
if(NOT TARGET xnncache::xnncache)
  if(NOT ANDROID_ABI)
    message(FATAL_ERROR "xnncache: ANDROID_ABI is not set (use the NDK's CMake toolchain)")
  endif()
  set(_xnncache_lib "${CMAKE_CURRENT_LIST_DIR}/${ANDROID_ABI}/libxnncache.a")
  if(NOT EXISTS "${_xnncache_lib}")
    message(FATAL_ERROR "xnncache: no library for ABI ${ANDROID_ABI} (${_xnncache_lib})")
  endif()
  add_library(xnncache::xnncache STATIC IMPORTED)
  set_target_properties(xnncache::xnncache PROPERTIES
    IMPORTED_LOCATION "${_xnncache_lib}"
    INTERFACE_INCLUDE_DIRECTORIES "${CMAKE_CURRENT_LIST_DIR}/include"
    INTERFACE_LINK_LIBRARIES "dl;m")
  unset(_xnncache_lib)
endif()
CMAKE
fi

# The CMake package configures for each ABI built, as the NDK's toolchain
# would call it (ANDROID and ANDROID_ABI set), and names that ABI's archive.
if [[ -f "$out/android/xnncacheConfig.cmake" ]] && command -v cmake >/dev/null; then
    probe=$(mktemp -d)
    cat >"$probe/CMakeLists.txt" <<'CMAKE'
cmake_minimum_required(VERSION 3.16)
project(xnncache_package_check NONE)
find_package(xnncache REQUIRED CONFIG)
get_target_property(_lib xnncache::xnncache IMPORTED_LOCATION)
get_target_property(_inc xnncache::xnncache INTERFACE_INCLUDE_DIRECTORIES)
if(NOT _lib STREQUAL "${xnncache_DIR}/${ANDROID_ABI}/libxnncache.a" OR NOT EXISTS "${_lib}" OR NOT EXISTS "${_inc}/xnncache.h")
  message(FATAL_ERROR "xnncache::xnncache names ${_lib} and ${_inc}")
endif()
CMAKE
    for abi in arm64-v8a armeabi-v7a x86_64; do
        [[ -f "$out/android/$abi/libxnncache.a" ]] || continue
        rm -rf "$probe/build"
        cmake --no-warn-unused-cli -S "$probe" -B "$probe/build" -DANDROID=ON -DANDROID_ABI="$abi" -Dxnncache_DIR="$out/android" >/dev/null \
            || { echo "package-mobile: the CMake package does not configure for $abi" >&2; exit 1; }
        echo "package-mobile: $abi: the CMake package configures (xnncache::xnncache -> $abi/libxnncache.a)"
    done
    rm -rf "$probe"
fi

# iOS: one XCFramework, a device library and a simulator library.
ios_libs=()
if wanted ios aarch64-apple-ios; then ios_libs+=(device); fi
if wanted ios aarch64-apple-ios-sim || wanted ios x86_64-apple-ios; then ios_libs+=(simulator); fi
if [[ ${#ios_libs[@]} -gt 0 ]]; then
    xc="$out/ios/xnncache.xcframework"
    rm -rf "$xc"
    plist_libs=""
    for kind in "${ios_libs[@]}"; do
        if [[ $kind == device ]]; then
            id=ios-arm64 variant=""
            lib=$(mobile_build aarch64-apple-ios)
            mkdir -p "$xc/$id"
            cp "$lib" "$xc/$id/libxnncache.a"
            python3 scripts/mobile-check.py macho "$xc/$id/libxnncache.a" arm64 ios
            archs="<string>arm64</string>"
        else
            id=ios-arm64_x86_64-simulator variant="<key>SupportedPlatformVariant</key><string>simulator</string>"
            arm=$(mobile_build aarch64-apple-ios-sim)
            x86=$(mobile_build x86_64-apple-ios)
            mkdir -p "$xc/$id"
            python3 scripts/mobile-check.py fat "$xc/$id/libxnncache.a" arm64="$arm" x86_64="$x86"
            python3 scripts/mobile-check.py macho "$xc/$id/libxnncache.a" arm64 ios-simulator --arches arm64,x86_64
            archs="<string>arm64</string><string>x86_64</string>"
        fi
        mkdir -p "$xc/$id/Headers"
        cp "$header" "$xc/$id/Headers/xnncache.h"
        printf 'module xnncache {\n  header "xnncache.h"\n  export *\n}\n' >"$xc/$id/Headers/module.modulemap"
        plist_libs+="
		<dict>
			<key>BinaryPath</key><string>libxnncache.a</string>
			<key>HeadersPath</key><string>Headers</string>
			<key>LibraryIdentifier</key><string>$id</string>
			<key>LibraryPath</key><string>libxnncache.a</string>
			<key>SupportedArchitectures</key><array>$archs</array>
			<key>SupportedPlatform</key><string>ios</string>$variant
		</dict>"
        report+=("ios/xnncache.xcframework/$id/libxnncache.a $(size_of "$xc/$id/libxnncache.a")")
    done
    cat >"$xc/Info.plist" <<PLIST
<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0">
<dict>
	<key>AvailableLibraries</key>
	<array>$plist_libs
	</array>
	<key>CFBundlePackageType</key><string>XFWK</string>
	<key>XCFrameworkFormatVersion</key><string>1.0</string>
</dict>
</plist>
PLIST
    python3 scripts/mobile-check.py plist "$xc/Info.plist"
fi

echo "package-mobile: archive sizes (bytes; what an app gains is far less, see scripts/footprint.sh):"
for r in "${report[@]}"; do
    printf '  %-58s %10s\n' ${r% *} ${r##* }
done
echo "package-mobile: $out ready, checks passed (${SECONDS} s)"
