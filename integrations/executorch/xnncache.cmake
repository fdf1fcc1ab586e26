# Builds ExecuTorch's XNNPACK backend with xnncache's XNNWeightsCache.cpp in
# place of ExecuTorch's own, and links libxnncache.a into every program that
# links the backend. ExecuTorch's header (XNNWeightsCache.h) is unchanged.
#
# Include it once the `xnnpack_backend` target exists, e.g. after
# add_subdirectory(executorch) in your CMakeLists.txt:
#
#   set(XNNCACHE_LIBRARY /path/to/xnncache/target/release/libxnncache.a)  # optional
#   include(/path/to/xnncache/integrations/executorch/xnncache.cmake)
#
# or, building ExecuTorch's own top-level CMakeLists.txt, pass
#   -DCMAKE_PROJECT_executorch_INCLUDE=/path/to/xnncache/integrations/executorch/hook.cmake
#
# XNNCACHE_LIBRARY defaults to target/release/libxnncache.a of the xnncache
# repository this file belongs to (`cargo build --release -p xnncache`). For
# an Android app, set XNNCACHE_ANDROID_DIR to the `android` folder that
# scripts/package-mobile.sh made instead: the archive of the ABI being built
# (ANDROID_ABI) is taken from it.

if(NOT TARGET xnnpack_backend)
  message(FATAL_ERROR "xnncache.cmake: include it after ExecuTorch defines xnnpack_backend "
                      "(EXECUTORCH_BUILD_XNNPACK=ON, EXECUTORCH_XNNPACK_ENABLE_WEIGHT_CACHE=ON)")
endif()

# Without the weight cache option ExecuTorch never calls the class: the swap
# would link xnncache for nothing. Refused, unless asked for explicitly.
if(NOT EXECUTORCH_XNNPACK_ENABLE_WEIGHT_CACHE AND NOT XNNCACHE_ALLOW_WITHOUT_WEIGHT_CACHE)
  message(FATAL_ERROR "xnncache.cmake: EXECUTORCH_XNNPACK_ENABLE_WEIGHT_CACHE is OFF, so ExecuTorch's "
                      "XNNPACK backend never uses a weights cache and xnncache would do nothing. Configure "
                      "with -DEXECUTORCH_XNNPACK_ENABLE_WEIGHT_CACHE=ON (or, to link it anyway, "
                      "-DXNNCACHE_ALLOW_WITHOUT_WEIGHT_CACHE=ON).")
endif()

get_filename_component(_xnncache_root "${CMAKE_CURRENT_LIST_DIR}/../.." ABSOLUTE)
if(NOT XNNCACHE_LIBRARY AND ANDROID AND XNNCACHE_ANDROID_DIR)
  set(XNNCACHE_LIBRARY "${XNNCACHE_ANDROID_DIR}/${ANDROID_ABI}/libxnncache.a")
endif()
if(NOT XNNCACHE_LIBRARY)
  set(XNNCACHE_LIBRARY "${_xnncache_root}/target/release/libxnncache.a")
endif()
# A wrong path, or configuring before the library was built, fails here and
# not when the first program links.
if(NOT EXISTS "${XNNCACHE_LIBRARY}")
  message(FATAL_ERROR "xnncache.cmake: XNNCACHE_LIBRARY=${XNNCACHE_LIBRARY} does not exist. Build it "
                      "with `cargo build --release -p xnncache` in ${_xnncache_root} (it makes "
                      "target/release/libxnncache.a), or set -DXNNCACHE_LIBRARY to a libxnncache.a you built.")
endif()

# 1. The replacement source file.
get_target_property(_xnncache_et_srcs xnnpack_backend SOURCES)
list(FILTER _xnncache_et_srcs EXCLUDE REGEX "backends/xnnpack/runtime/XNNWeightsCache\\.cpp$")
list(APPEND _xnncache_et_srcs "${_xnncache_root}/integrations/executorch/XNNWeightsCache.cpp")
set_property(TARGET xnnpack_backend PROPERTY SOURCES ${_xnncache_et_srcs})

# 2. xnncache.h.
target_include_directories(xnnpack_backend PRIVATE "${_xnncache_root}/include")

# 3. libxnncache.a and the system libraries a Rust static library needs:
# bionic has pthread and rt in libc and no libutil; Apple's are all in
# libSystem, which every program links.
if(ANDROID)
  set(_xnncache_system_libs dl m)
elseif(APPLE)
  set(_xnncache_system_libs)
else()
  set(_xnncache_system_libs pthread dl m rt util)
endif()
target_link_libraries(xnnpack_backend PUBLIC "${XNNCACHE_LIBRARY}" ${_xnncache_system_libs})

message(STATUS "xnncache: xnnpack_backend builds ${_xnncache_root}/integrations/executorch/XNNWeightsCache.cpp and links ${XNNCACHE_LIBRARY}")
