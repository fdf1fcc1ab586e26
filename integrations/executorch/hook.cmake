# For ExecuTorch's own top-level build: -DCMAKE_PROJECT_executorch_INCLUDE=<this file>.
# CMake reads it right after project(executorch), before any target exists,
# so it defers xnncache.cmake to the end of the top-level CMakeLists.txt.
set(XNNCACHE_EXECUTORCH_CMAKE "${CMAKE_CURRENT_LIST_DIR}/xnncache.cmake")
cmake_language(DEFER DIRECTORY "${CMAKE_SOURCE_DIR}"
               CALL include "${XNNCACHE_EXECUTORCH_CMAKE}")
