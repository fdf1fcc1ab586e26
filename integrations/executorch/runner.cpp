// Loads an ExecuTorch program (.pte) through executorch::extension::Module,
// runs `forward` on a raw input file and compares the output with an
// expected file byte for byte. Prints one JSON line:
//
//   {"program":...,"mode":...,"class":"stock"|"xnncache","threads":2,
//    "load_ms":...,"load_method_ms":...,"first_execute_ms":...,
//    "first_output_ms":...,"steady_execute_ms":...,"peak_rss_kib":...,
//    "execute_ms":[every execute],"read_bytes_after_load":...,"read_bytes":...,
//    "after_load":{...},"end":{...},"cache_file_bytes_while_open":...,
//    "identical":true,"cache_file_maps":"r--s","xnncache":{...}}
//
// first_output_ms = load_method_ms + first_execute_ms (the program itself,
// load_ms, is mapped lazily and costs a few microseconds).
// after_load: memory right after load_method (before the first execute);
// end: after the runs and (xnncache) the background write-back. Each holds,
// in KiB, from /proc/self/smaps_rollup: rss, pss, pss_anon, pss_file,
// private_dirty, shared_dirty, anon; and from /proc/self/smaps, over the
// mappings of the cache file only: file_rss, file_pss, file_dirty
// (private + shared dirty), file_pmd (FilePmdMapped: 2 MiB mappings).
// cache_file_maps: the permissions of the cache file's mappings after the
// runs (from /proc/self/maps). cache_file_bytes_while_open: its size at the end of the runs, while the
// cache is still open (with any growth room a close trims: the size a user
// finds on disk can be smaller; scripts/bench-executorch.py measures that one
// after the process exits).
//
// XNNCACHE_ET_SMAPS_DUMP=FILE copies /proc/self/smaps there right after
// load_method (to see which mappings the figures come from).
//
// Usage: runner PROGRAM.pte INPUT.bin EXPECTED.bin MODE [PATH] [--runs N] [--out FILE] [--threads N]
//   EXPECTED.bin "-": no comparison (the run that makes a reference, with --out)
//   MODE none   XNNPACK's weights cache off (weight_cache_enabled=false)
//        heap   on, no file (packed_cache_path unset)
//        file   on, packed_cache_path=PATH
// --out FILE writes the first output's bytes there (to compare runs).
// --threads N resets ExecuTorch's shared threadpool to N threads before
// loading (default: what ExecuTorch picks, the number of performance cores).
// Exit status: 0 when the output is identical to EXPECTED.bin, 1 when it
// differs, 2 on any other failure.
//
// Built against the xnncache variant of the XNNPACK backend, "xnncache"
// holds that cache's statistics after load_method (the replacement class's
// xnncache_executorch_stats); against ExecuTorch's own class it is null.

#include <executorch/backends/xnnpack/runtime/XNNPACKBackend.h>
#include <executorch/extension/module/module.h>
#include <executorch/extension/tensor/tensor.h>
#include <executorch/extension/threadpool/threadpool.h>
#include <executorch/runtime/backend/backend_options_map.h>
#include <executorch/runtime/backend/options.h>

#include <xnncache.h>

#include "read_file.h"

#include <sys/resource.h>
#include <sys/stat.h>

#include <climits>

#include <algorithm>
#include <chrono>
#include <cctype>
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

using xnncache_et::read_file;

using executorch::extension::Module;
using executorch::runtime::BackendOptions;
using executorch::runtime::Error;
using executorch::runtime::LoadBackendOptionsMap;

using Clock = std::chrono::steady_clock;

// Bytes this process caused to be read from storage so far (read_bytes of
// /proc/self/io), or -1 where that is not available.
long long disk_read_bytes() {
  std::ifstream io("/proc/self/io");
  std::string key;
  long long value = 0;
  while (io >> key >> value) {
    if (key == "read_bytes:") {
      return value;
    }
  }
  return -1;
}

double ms_since(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
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

// Memory figures in KiB (see the header comment). Reading smaps walks the
// page tables but changes nothing the program uses.
struct Memory {
  long rss = 0, pss = 0, pss_anon = 0, pss_file = 0, private_dirty = 0, shared_dirty = 0, anon = 0;
  long file_rss = 0, file_pss = 0, file_dirty = 0, file_pmd = 0;
};

long kib_field(const std::string& line, const char* name) {
  const size_t n = std::strlen(name);
  if (line.compare(0, n, name) != 0 || line.size() <= n || line[n] != ':') {
    return -1;
  }
  return std::atol(line.c_str() + n + 1);
}

Memory read_memory(const std::string& cache_file) {
  Memory m;
  std::ifstream rollup("/proc/self/smaps_rollup");
  std::string line;
  while (std::getline(rollup, line)) {
    long v;
    if ((v = kib_field(line, "Rss")) >= 0) m.rss = v;
    else if ((v = kib_field(line, "Pss")) >= 0) m.pss = v;
    else if ((v = kib_field(line, "Pss_Anon")) >= 0) m.pss_anon = v;
    else if ((v = kib_field(line, "Pss_File")) >= 0) m.pss_file = v;
    else if ((v = kib_field(line, "Private_Dirty")) >= 0) m.private_dirty = v;
    else if ((v = kib_field(line, "Shared_Dirty")) >= 0) m.shared_dirty = v;
    else if ((v = kib_field(line, "Anonymous")) >= 0) m.anon = v;
  }
  if (cache_file.empty()) {
    return m;
  }
  // /proc/self/smaps: a header line per mapping ("start-end perms offset
  // dev inode path"), then its "Name: value kB" lines.
  std::ifstream smaps("/proc/self/smaps");
  bool ours = false;
  while (std::getline(smaps, line)) {
    if (!line.empty() && std::isxdigit(static_cast<unsigned char>(line[0])) && line.find('-') < line.find(' ')) {
      const size_t slash = line.find('/');
      ours = slash != std::string::npos && line.compare(slash, std::string::npos, cache_file) == 0;
      continue;
    }
    if (!ours) {
      continue;
    }
    long v;
    if ((v = kib_field(line, "Rss")) >= 0) m.file_rss += v;
    else if ((v = kib_field(line, "Pss")) >= 0) m.file_pss += v;
    else if ((v = kib_field(line, "Private_Dirty")) >= 0) m.file_dirty += v;
    else if ((v = kib_field(line, "Shared_Dirty")) >= 0) m.file_dirty += v;
    else if ((v = kib_field(line, "FilePmdMapped")) >= 0) m.file_pmd += v;
  }
  return m;
}

std::string memory_json(const Memory& m) {
  char buf[512];
  std::snprintf(
      buf, sizeof(buf),
      "{\"rss\":%ld,\"pss\":%ld,\"pss_anon\":%ld,\"pss_file\":%ld,\"private_dirty\":%ld,"
      "\"shared_dirty\":%ld,\"anon\":%ld,\"file_rss\":%ld,\"file_pss\":%ld,\"file_dirty\":%ld,"
      "\"file_pmd\":%ld}",
      m.rss, m.pss, m.pss_anon, m.pss_file, m.private_dirty, m.shared_dirty, m.anon, m.file_rss,
      m.file_pss, m.file_dirty, m.file_pmd);
  return buf;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 5) {
    std::fprintf(stderr, "usage: %s PROGRAM.pte INPUT.bin EXPECTED.bin none|heap|file [PATH] [--runs N] [--out FILE] [--threads N]\n", argv[0]);
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
  int threads = 0;
  const char* out_path = nullptr;
  for (int i = next; i < argc; ++i) {
    if (std::strcmp(argv[i], "--runs") == 0 && i + 1 < argc) {
      runs = std::max(1, std::atoi(argv[++i]));
    } else if (std::strcmp(argv[i], "--threads") == 0 && i + 1 < argc) {
      threads = std::max(1, std::atoi(argv[++i]));
    } else if (std::strcmp(argv[i], "--out") == 0 && i + 1 < argc) {
      out_path = argv[++i];
    } else {
      std::fprintf(stderr, "runner: unknown argument %s\n", argv[i]);
      return 2;
    }
  }

  std::vector<uint8_t> input;
  std::vector<uint8_t> expected;
  // EXPECTED "-": nothing to compare with (the output is the reference, with --out).
  const bool compare = std::strcmp(argv[3], "-") != 0;
  if (!read_file(argv[2], &input) || (compare && !read_file(argv[3], &expected))) {
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

  // The cache file's path as /proc/self/maps spells it (resolved once it
  // exists, i.e. after load_method).
  auto resolve = [&cache_path]() {
    char resolved[PATH_MAX];
    return realpath(cache_path.c_str(), resolved) != nullptr ? std::string(resolved) : cache_path;
  };

  auto* pool = executorch::extension::threadpool::get_threadpool();
  if (pool == nullptr) {
    return fail("get_threadpool", Error::Internal);
  }
  if (threads > 0) {
    pool->_unsafe_reset_threadpool(static_cast<uint32_t>(threads));
  }
  const unsigned pool_threads = pool->get_thread_count();

  // Wall-clock start, to place xnncache's commit time (ms since 1970) on
  // this process's timeline.
  const double start_unix_ms =
      std::chrono::duration<double, std::milli>(std::chrono::system_clock::now().time_since_epoch()).count();
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
  const Memory after_load = read_memory(cache_path.empty() ? std::string() : resolve());
  const long long read_bytes_after_load = disk_read_bytes();
  if (const char* dump = std::getenv("XNNCACHE_ET_SMAPS_DUMP")) {
    // For investigations: the whole /proc/self/smaps right after load_method.
    std::ifstream in("/proc/self/smaps");
    std::ofstream(dump) << in.rdbuf();
  }

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
  if (compare && (first_output.size() != expected.size() || std::memcmp(first_output.data(), expected.data(), expected.size()) != 0)) {
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
  long long cache_file_bytes = -1;
  Memory end;
  if (!cache_path.empty()) {
    const std::string target = resolve();
    end = read_memory(target);
    struct stat st {};
    if (stat(target.c_str(), &st) == 0) {
      cache_file_bytes = static_cast<long long>(st.st_size);
    }
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
  } else {
    end = read_memory(std::string());
  }

  struct rusage usage {};
  getrusage(RUSAGE_SELF, &usage);

  // Every execute (those of a cold process run during the write-back), and
  // the bytes this process made the disk read (/proc/self/io read_bytes:
  // page cache misses, readahead included) by the end of load_method and in all.
  std::string executes;
  for (double e : execute_ms) {
    char b[32];
    std::snprintf(b, sizeof(b), "%s%.3f", executes.empty() ? "" : ",", e);
    executes += b;
  }
  const long long read_bytes_end = disk_read_bytes();

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
        ",\"commits\":%" PRIu64 ",\"backing\":%u,\"file_state\":%u,\"commit_durable_ms\":%.1f}",
        s.entries, s.packed_bytes, s.found_bytes, s.look_ups, s.hits, s.loaded_entries,
        s.heap_fallback_bytes, s.not_persisted, s.file_size, s.commits, s.backing, s.file_state,
        s.last_commit_unix_ms != 0 ? static_cast<double>(s.last_commit_unix_ms) - start_unix_ms : -1.0);
    stats = buf;
  }

  std::printf(
      "{\"program\":\"%s\",\"mode\":\"%s\",\"class\":\"%s\",\"threads\":%u,\"load_ms\":%.3f,"
      "\"load_method_ms\":%.3f,\"first_execute_ms\":%.3f,\"first_output_ms\":%.3f,"
      "\"steady_execute_ms\":%.3f,\"peak_rss_kib\":%ld,\"after_load\":%s,\"end\":%s,"
      "\"cache_file_bytes_while_open\":%lld,\"identical\":%s,\"max_abs_diff\":%g,\"cache_file_maps\":\"%s\","
      "\"execute_ms\":[%s],\"read_bytes_after_load\":%lld,\"read_bytes\":%lld,"
      "\"xnncache\":%s}\n",
      json_escape(program).c_str(), mode.c_str(),
      xnncache_executorch_stats != nullptr ? "xnncache" : "stock", pool_threads,
      load_ms, load_method_ms, execute_ms[0], load_method_ms + execute_ms[0], steady_ms,
      usage.ru_maxrss, memory_json(after_load).c_str(), memory_json(end).c_str(), cache_file_bytes,
      identical ? "true" : "false", max_abs_diff, maps.c_str(), executes.c_str(),
      read_bytes_after_load, read_bytes_end, stats.c_str());
  std::fflush(stdout);
  return identical ? 0 : 1;
}
