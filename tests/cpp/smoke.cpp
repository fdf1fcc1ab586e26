// A C++ program using xnncache the way a C++ inference app would: RAII
// owners for the cache and the runtime, XNNCACHE_OPTIONS_INIT, a convolution.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include <xnnpack.h>

#include "xnncache.h"

namespace {

void check(bool ok, const std::string& what) {
  if (!ok) throw std::runtime_error(what);
}

struct CacheCloser {
  void operator()(xnncache* c) const { xnncache_close(c); }
};
using CachePtr = std::unique_ptr<xnncache, CacheCloser>;

struct RuntimeDeleter {
  void operator()(xnn_runtime* r) const { xnn_delete_runtime(r); }
};

CachePtr open_cache(const char* path) {
  xnncache_options options = XNNCACHE_OPTIONS_INIT;
  options.path = path;
  xnncache* raw = nullptr;
  const xnncache_status status = xnncache_open(&options, &raw);
  check(status == XNNCACHE_OK, std::string("xnncache_open: ") + xnncache_status_name(status) + ": " + xnncache_last_error());
  return CachePtr(raw);
}

struct Conv {
  static constexpr size_t H = 10, W = 10, CIN = 8, COUT = 16;
  std::vector<float> weights, bias, input;

  Conv() : weights(COUT * 3 * 3 * CIN + 16), bias(COUT + 16), input(H * W * CIN + 16) {
    for (size_t i = 0; i < weights.size(); i++) weights[i] = std::sin(0.37f * i);
    for (size_t i = 0; i < bias.size(); i++) bias[i] = 0.1f * i;
    for (size_t i = 0; i < input.size(); i++) input[i] = std::cos(0.11f * i);
  }

  std::vector<float> run(xnn_weights_cache_t cache) const {
    xnn_subgraph_t subgraph = nullptr;
    check(xnn_create_subgraph(2, 0, &subgraph) == xnn_status_success, "subgraph");
    const size_t in_dims[4] = {1, H, W, CIN}, w_dims[4] = {COUT, 3, 3, CIN}, b_dims[1] = {COUT}, out_dims[4] = {1, H, W, COUT};
    uint32_t in_id, w_id, b_id, out_id;
    check(xnn_define_tensor_value(subgraph, xnn_datatype_fp32, 4, in_dims, nullptr, 0, XNN_VALUE_FLAG_EXTERNAL_INPUT, &in_id) == xnn_status_success, "in");
    check(xnn_define_tensor_value(subgraph, xnn_datatype_fp32, 4, w_dims, weights.data(), XNN_INVALID_VALUE_ID, 0, &w_id) == xnn_status_success, "w");
    check(xnn_define_tensor_value(subgraph, xnn_datatype_fp32, 1, b_dims, bias.data(), XNN_INVALID_VALUE_ID, 0, &b_id) == xnn_status_success, "b");
    check(xnn_define_tensor_value(subgraph, xnn_datatype_fp32, 4, out_dims, nullptr, 1, XNN_VALUE_FLAG_EXTERNAL_OUTPUT, &out_id) == xnn_status_success, "out");
    check(xnn_define_convolution_2d(subgraph, 1, 1, 1, 1, 3, 3, 1, 1, 1, 1, 1, CIN, COUT, -INFINITY, INFINITY, in_id, w_id, b_id, out_id, 0) == xnn_status_success, "conv");
    xnn_runtime_t raw = nullptr;
    const xnn_status created = xnn_create_runtime_v4(subgraph, cache, nullptr, nullptr, 0, &raw);
    xnn_delete_subgraph(subgraph);
    check(created == xnn_status_success, "create runtime");
    std::unique_ptr<xnn_runtime, RuntimeDeleter> runtime(raw);
    std::vector<float> output(H * W * COUT);
    const xnn_external_value external[2] = {{in_id, const_cast<float*>(input.data())}, {out_id, output.data()}};
    check(xnn_reshape_runtime(runtime.get()) == xnn_status_success, "reshape");
    check(xnn_setup_runtime_v2(runtime.get(), 2, external) == xnn_status_success, "setup");
    check(xnn_invoke_runtime(runtime.get()) == xnn_status_success, "invoke");
    return output;
  }
};

}  // namespace

int main() {
  try {
    check(xnn_initialize(nullptr) == xnn_status_success, "xnn_initialize");
    const char* path = std::getenv("XNNCACHE_TEST_FILE");
    check(path != nullptr, "XNNCACHE_TEST_FILE is not set");
    const Conv conv;
    const std::vector<float> expected = conv.run(nullptr);
    CachePtr cache = open_cache(path);
    for (int round = 0; round < 2; round++) {
      const std::vector<float> got = conv.run(xnncache_provider(cache.get()));
      check(std::memcmp(got.data(), expected.data(), got.size() * sizeof(float)) == 0, "outputs differ");
      check(xnncache_finalize(cache.get()) == XNNCACHE_OK, xnncache_last_error());
    }
    struct xnncache_stats stats{};
    check(xnncache_stats(cache.get(), &stats) == XNNCACHE_OK, "stats");
    check(stats.entries == 1 && stats.hits == 1, "one entry, found once");
    std::printf("cpp-smoke: %llu entries, %llu bytes in %s\n", static_cast<unsigned long long>(stats.entries),
                static_cast<unsigned long long>(stats.file_size), path);
    std::printf("cpp-smoke-ok\n");
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "cpp-smoke: %s\n", e.what());
    return 1;
  }
}
