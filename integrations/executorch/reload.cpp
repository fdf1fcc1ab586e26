// Programs unloaded and loaded again in one process, on one cache file, the
// way an app swaps models: each load is an executorch::extension::Module
// made, loaded (load_method builds the XNNPACK runtime), run once and
// destroyed. With the replacement class, ExecuTorch keeps one weights cache
// per path while a delegate uses it; once the last Module on the path is
// gone the cache is closed, and the next load opens the file again.
//
// Usage: reload CACHE_PATH ROUNDS sequential|alternating PROGRAM INPUT EXPECTED [PROGRAM INPUT EXPECTED]...
//   sequential   each program made, run and destroyed in turn: every load
//                after a program's first opens the file anew;
//   alternating  (two programs) lifetimes overlap: A, B made; A destroyed and
//                made again while B lives; then B; every round;
//
// Prints a line per load ("reload: round R PROGRAM packed N identical 0|1")
// and exits 0 only if every output equals its EXPECTED bytes, each program's
// first load (CACHE_PATH must be new) packed, and no later load packed
// anything (xnncache's packed_bytes, read through xnncache_executorch_stats
// before and after load_method).

#include <executorch/backends/xnnpack/runtime/XNNPACKBackend.h>
#include <executorch/extension/module/module.h>
#include <executorch/extension/tensor/tensor.h>
#include <executorch/runtime/backend/backend_options_map.h>
#include <executorch/runtime/backend/options.h>

#include <xnncache.h>

#include "read_file.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <set>
#include <string>
#include <vector>

extern "C" int xnncache_executorch_stats(const char* path, struct xnncache_stats* out);

namespace {

using xnncache_et::read_file;

using executorch::extension::Module;
using executorch::runtime::BackendOptions;
using executorch::runtime::Error;
using executorch::runtime::LoadBackendOptionsMap;

struct Program {
  std::string pte;
  std::vector<uint8_t> input;
  std::vector<uint8_t> expected;
};

// Packed bytes of the live cache on `path` so far (0 when none is open).
uint64_t packed_so_far(const std::string& path) {
  struct xnncache_stats s {};
  return xnncache_executorch_stats(path.c_str(), &s) == XNNCACHE_OK ? s.packed_bytes : 0;
}

class Loader {
 public:
  explicit Loader(std::string cache_path) : path_(std::move(cache_path)) {
    namespace xnn = executorch::backends::xnnpack;
    options_.set_option(xnn::weight_cache_option_key, true);
    options_.set_option(xnn::packed_cache_path_option_key, path_.c_str());
    ok_ = map_.set_options(xnn::xnnpack_backend_key, options_.view()) == Error::Ok;
  }

  bool ok() const { return ok_; }

  // Makes and loads a Module of `p`, runs it once, checks the output and
  // reports what it packed. Returns the Module (kept alive by the caller).
  std::unique_ptr<Module> load(int round, const Program& p) {
    const uint64_t before = packed_so_far(path_);
    auto module = std::make_unique<Module>(p.pte, Module::LoadMode::Mmap);
    if (module->load(map_) != Error::Ok || module->load_method("forward") != Error::Ok) {
      std::fprintf(stderr, "reload: cannot load %s\n", p.pte.c_str());
      failed_ = true;
      return nullptr;
    }
    const uint64_t packed = packed_so_far(path_) - before;
    const bool identical = run(*module, p);
    const bool first = seen_.insert(p.pte).second;
    std::printf("reload: round %d %s packed %llu identical %d\n", round, p.pte.c_str(), static_cast<unsigned long long>(packed), identical ? 1 : 0);
    // A first load on a new file packs (else "nothing repacked" below would
    // prove nothing); every later one finds everything.
    if (!identical || (first && packed == 0) || (!first && packed != 0)) {
      failed_ = true;
    }
    return module;
  }

  bool failed() const { return failed_; }

 private:
  bool run(Module& module, const Program& p) {
    auto meta = module.method_meta("forward");
    if (!meta.ok()) {
      return false;
    }
    auto in_meta = meta->input_tensor_meta(0);
    if (!in_meta.ok()) {
      return false;
    }
    std::vector<executorch::aten::SizesType> sizes(in_meta->sizes().begin(), in_meta->sizes().end());
    std::vector<float> x(p.input.size() / sizeof(float));
    std::memcpy(x.data(), p.input.data(), p.input.size());
    auto tensor = executorch::extension::from_blob(x.data(), sizes);
    auto result = module.forward(tensor);
    if (!result.ok()) {
      return false;
    }
    const auto& out = result->at(0).toTensor();
    return out.nbytes() == p.expected.size() && std::memcmp(out.const_data_ptr(), p.expected.data(), p.expected.size()) == 0;
  }

  std::string path_;
  BackendOptions<2> options_;
  LoadBackendOptionsMap map_;
  bool ok_ = false;
  bool failed_ = false;
  std::set<std::string> seen_;
};

}  // namespace

int main(int argc, char** argv) {
  if (argc < 7 || (argc - 4) % 3 != 0) {
    std::fprintf(stderr, "usage: %s CACHE_PATH ROUNDS sequential|alternating PROGRAM INPUT EXPECTED...\n", argv[0]);
    return 2;
  }
  const std::string mode = argv[3];
  const int rounds = std::atoi(argv[2]);
  std::vector<Program> programs;
  for (int i = 4; i < argc; i += 3) {
    Program p{argv[i], {}, {}};
    if (!read_file(argv[i + 1], &p.input) || !read_file(argv[i + 2], &p.expected)) {
      std::fprintf(stderr, "reload: cannot read %s or %s\n", argv[i + 1], argv[i + 2]);
      return 2;
    }
    programs.push_back(std::move(p));
  }
  if ((mode != "sequential" && mode != "alternating") || (mode == "alternating" && programs.size() != 2) || rounds < 1) {
    std::fprintf(stderr, "reload: bad arguments\n");
    return 2;
  }
  Loader loader(argv[1]);
  if (!loader.ok()) {
    std::fprintf(stderr, "reload: set_options failed\n");
    return 2;
  }
  for (int round = 1; round <= rounds; ++round) {
    if (mode == "sequential") {
      for (const Program& p : programs) {
        loader.load(round, p);  // destroyed at once
      }
    } else {
      auto a = loader.load(round, programs[0]);
      auto b = loader.load(round, programs[1]);
      a.reset();
      a = loader.load(round, programs[0]);  // made again while b lives
      b.reset();
      b = loader.load(round, programs[1]);  // and b while a lives
    }
  }
  return loader.failed() ? 1 : 0;
}
