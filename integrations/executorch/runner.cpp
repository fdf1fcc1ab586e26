// Loads an ExecuTorch program (.pte) through executorch::extension::Module,
// runs `forward` on a raw input file and compares the output with an
// expected file byte for byte. Prints one JSON line:
//
//   {"program":...,"mode":...,"load_ms":...,"load_method_ms":...,
//    "first_execute_ms":...,"steady_execute_ms":...,"peak_rss_kib":...,
//    "identical":true,"cache_file_maps":"r--s","xnncache":{...}}
//
// cache_file_maps: the permissions of the cache file's mappings after the
// runs (from /proc/self/maps).
//
// Usage: runner PROGRAM.pte INPUT.bin EXPECTED.bin MODE [PATH] [--runs N] [--out FILE]
//   MODE none   XNNPACK's weights cache off (weight_cache_enabled=false)
//        heap   on, no file (packed_cache_path unset)
//        file   on, packed_cache_path=PATH
// --out FILE writes the first output's bytes there (to compare runs).
// Exit status: 0 when the output is identical to EXPECTED.bin, 1 when it
// differs, 2 on any other failure.
//
// Built against the xnncache variant of the XNNPACK backend, "xnncache"
// holds that cache's statistics after load_method (the replacement class's
// xnncache_executorch_stats); against ExecuTorch's own class it is null.

#include <executorch/backends/xnnpack/runtime/XNNPACKBackend.h>
#include <executorch/extension/module/module.h>
#include <executorch/extension/tensor/tensor.h>
#include <executorch/runtime/backend/backend_options_map.h>
#include <executorch/runtime/backend/options.h>

#include <xnncache.h>

#include <sys/resource.h>

#include <climits>

#include <algorithm>
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

extern "C" int xnncache_executorch_stats(const char* path, struct xnncache_stats* out)
    __attribute__((weak));
extern "C" int xnncache_executorch_wait(const char* path, uint32_t timeout_ms)
    __attribute__((weak));

namespace {

using executorch::extension::Module;
using executorch::runtime::BackendOptions;
using executorch::runtime::Error;
using executorch::runtime::LoadBackendOptionsMap;

using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

bool read_file(const char* path, std::vector<uint8_t>* out) {
  std::ifstream f(path, std::ios::binary | std::ios::ate);
  if (!f) {
    return false;
  }
  out->resize(static_cast<size_t>(f.tellg()));
  f.seekg(0);
  f.read(reinterpret_cast<char*>(out->data()), static_cast<std::streamsize>(out->size()));
  return static_cast<bool>(f);
}

int fail(const char* what, Error err) {
  std::fprintf(stderr, "runner: %s failed (error 0x%x)\n", what, static_cast<unsigned>(err));
  return 2;
}

std::string json_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '"' || c == '\\') {
      out.push_back('\\');
    }
    out.push_back(c);
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 5) {
    std::fprintf(stderr, "usage: %s PROGRAM.pte INPUT.bin EXPECTED.bin none|heap|file [PATH] [--runs N]\n", argv[0]);
    return 2;
  }
  const char* program = argv[1];
  const std::string mode = argv[4];
  std::string cache_path;
  int next = 5;
  if (mode == "file") {
    if (argc < 6) {
      std::fprintf(stderr, "runner: mode file needs a PATH\n");
      return 2;
    }
    cache_path = argv[5];
    next = 6;
  } else if (mode != "none" && mode != "heap") {
    std::fprintf(stderr, "runner: unknown mode %s\n", mode.c_str());
    return 2;
  }
  int runs = 10;
  const char* out_path = nullptr;
  for (int i = next; i < argc; ++i) {
    if (std::strcmp(argv[i], "--runs") == 0 && i + 1 < argc) {
      runs = std::max(1, std::atoi(argv[++i]));
    } else if (std::strcmp(argv[i], "--out") == 0 && i + 1 < argc) {
      out_path = argv[++i];
    } else {
      std::fprintf(stderr, "runner: unknown argument %s\n", argv[i]);
      return 2;
    }
  }

  std::vector<uint8_t> input;
  std::vector<uint8_t> expected;
  if (!read_file(argv[2], &input) || !read_file(argv[3], &expected)) {
    std::fprintf(stderr, "runner: cannot read %s or %s\n", argv[2], argv[3]);
    return 2;
  }

  namespace xnn = executorch::backends::xnnpack;
  BackendOptions<2> options;
  options.set_option(xnn::weight_cache_option_key, mode != "none");
  if (mode == "file") {
    options.set_option(xnn::packed_cache_path_option_key, cache_path.c_str());
  }
  LoadBackendOptionsMap map;
  if (map.set_options(xnn::xnnpack_backend_key, options.view()) != Error::Ok) {
    return fail("set_options", Error::Internal);
  }

  auto t0 = Clock::now();
  Module module(program, Module::LoadMode::Mmap);
  Error err = module.load(map);
  if (err != Error::Ok) {
    return fail("load", err);
  }
  const double load_ms = ms_since(t0);

  // load_method builds the XNNPACK runtime: this is where weights are packed
  // (or, warm, found in the cache file).
  auto t1 = Clock::now();
  err = module.load_method("forward");
  if (err != Error::Ok) {
    return fail("load_method", err);
  }
  const double load_method_ms = ms_since(t1);

  auto meta = module.method_meta("forward");
  if (!meta.ok()) {
    return fail("method_meta", meta.error());
  }
  auto in_meta = meta->input_tensor_meta(0);
  if (!in_meta.ok()) {
    return fail("input_tensor_meta", in_meta.error());
  }
  std::vector<executorch::aten::SizesType> sizes(in_meta->sizes().begin(), in_meta->sizes().end());
  size_t numel = 1;
  for (auto s : sizes) {
    numel *= static_cast<size_t>(s);
  }
  if (numel * sizeof(float) != input.size()) {
    std::fprintf(stderr, "runner: %s holds %zu bytes, the program takes %zu floats\n", argv[2], input.size(), numel);
    return 2;
  }
  std::vector<float> x(numel);
  std::memcpy(x.data(), input.data(), input.size());
  auto tensor = executorch::extension::from_blob(x.data(), sizes);

  std::vector<double> execute_ms;
  std::vector<uint8_t> first_output;
  bool identical = true;
  double max_abs_diff = 0;
  for (int r = 0; r < runs + 1; ++r) {
    auto t = Clock::now();
    auto result = module.forward(tensor);
    const double ms = ms_since(t);
    if (!result.ok()) {
      return fail("forward", result.error());
    }
    execute_ms.push_back(ms);
    const auto& out = result->at(0).toTensor();
    const uint8_t* bytes = static_cast<const uint8_t*>(out.const_data_ptr());
    const size_t nbytes = out.nbytes();
    if (r == 0) {
      first_output.assign(bytes, bytes + nbytes);
    } else if (nbytes != first_output.size() || std::memcmp(bytes, first_output.data(), nbytes) != 0) {
      identical = false;  // not even stable within the process
    }
  }
  if (first_output.size() != expected.size() || std::memcmp(first_output.data(), expected.data(), expected.size()) != 0) {
    identical = false;
    if (first_output.size() == expected.size()) {
      const float* a = reinterpret_cast<const float*>(first_output.data());
      const float* b = reinterpret_cast<const float*>(expected.data());
      for (size_t i = 0; i < expected.size() / sizeof(float); ++i) {
        max_abs_diff = std::max(max_abs_diff, static_cast<double>(std::fabs(a[i] - b[i])));
      }
    } else {
      max_abs_diff = INFINITY;
    }
  }
  if (out_path != nullptr) {
    std::ofstream f(out_path, std::ios::binary | std::ios::trunc);
    f.write(reinterpret_cast<const char*>(first_output.data()), static_cast<std::streamsize>(first_output.size()));
    if (!f) {
      std::fprintf(stderr, "runner: cannot write %s\n", out_path);
      return 2;
    }
  }
  std::vector<double> steady(execute_ms.begin() + 1, execute_ms.end());
  std::sort(steady.begin(), steady.end());
  const double steady_ms = steady[steady.size() / 2];

  // xnncache writes the file in the background: wait for that commit before
  // looking at the file's mappings (the runs above did not wait for it).
  if (xnncache_executorch_wait != nullptr && !cache_path.empty()) {
    xnncache_executorch_wait(cache_path.c_str(), UINT32_MAX);
  }

  // How the cache file is mapped now (after the runs): the distinct
  // permissions of its mappings in /proc/self/maps, e.g. "r--s".
  std::string maps;
  if (!cache_path.empty()) {
    char resolved[PATH_MAX];
    const std::string target = realpath(cache_path.c_str(), resolved) != nullptr ? resolved : cache_path;
    std::ifstream m("/proc/self/maps");
    std::string line;
    while (std::getline(m, line)) {
      const size_t slash = line.find('/');
      if (slash == std::string::npos || line.compare(slash, std::string::npos, target) != 0) {
        continue;
      }
      const size_t sp = line.find(' ');
      const std::string perms = line.substr(sp + 1, 4);
      if (maps.find(perms) == std::string::npos) {
        maps += (maps.empty() ? "" : ",") + perms;
      }
    }
  }

  struct rusage usage {};
  getrusage(RUSAGE_SELF, &usage);

  std::string stats = "null";
  struct xnncache_stats s {};
  if (xnncache_executorch_stats != nullptr && mode != "none" &&
      xnncache_executorch_stats(cache_path.c_str(), &s) == XNNCACHE_OK) {
    char buf[512];
    std::snprintf(
        buf, sizeof(buf),
        "{\"entries\":%" PRIu64 ",\"packed_bytes\":%" PRIu64 ",\"found_bytes\":%" PRIu64
        ",\"look_ups\":%" PRIu64 ",\"hits\":%" PRIu64 ",\"loaded_entries\":%" PRIu64
        ",\"heap_fallback_bytes\":%" PRIu64 ",\"not_persisted\":%" PRIu64 ",\"file_size\":%" PRIu64
        ",\"commits\":%" PRIu64 ",\"backing\":%u,\"file_state\":%u}",
        s.entries, s.packed_bytes, s.found_bytes, s.look_ups, s.hits, s.loaded_entries,
        s.heap_fallback_bytes, s.not_persisted, s.file_size, s.commits, s.backing, s.file_state);
    stats = buf;
  }

  std::printf(
      "{\"program\":\"%s\",\"mode\":\"%s\",\"class\":\"%s\",\"load_ms\":%.3f,\"load_method_ms\":%.3f,"
      "\"first_execute_ms\":%.3f,\"steady_execute_ms\":%.3f,\"peak_rss_kib\":%ld,"
      "\"identical\":%s,\"max_abs_diff\":%g,\"cache_file_maps\":\"%s\",\"xnncache\":%s}\n",
      json_escape(program).c_str(), mode.c_str(),
      xnncache_executorch_stats != nullptr ? "xnncache" : "stock",
      load_ms, load_method_ms, execute_ms[0], steady_ms, usage.ru_maxrss,
      identical ? "true" : "false", max_abs_diff, maps.c_str(), stats.c_str());
  std::fflush(stdout);
  return identical ? 0 : 1;
}
