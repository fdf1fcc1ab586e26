// Reads a whole file into memory: the input and expected-output files of
// ExecuTorch's programs, for the test programs beside it (runner.cpp,
// reload.cpp). Header-only, so that each stays one translation unit.
#pragma once

#include <cstddef>
#include <cstdint>
#include <fstream>
#include <vector>

namespace xnncache_et {

inline bool read_file(const char* path, std::vector<uint8_t>* out) {
  std::ifstream f(path, std::ios::binary | std::ios::ate);
  if (!f) {
    return false;
  }
  out->resize(static_cast<size_t>(f.tellg()));
  f.seekg(0);
  f.read(reinterpret_cast<char*>(out->data()), static_cast<std::streamsize>(out->size()));
  return static_cast<bool>(f);
}

}  // namespace xnncache_et
