// A C++ app built against an installed xnncache with find_package: creates a
// real XNNPACK runtime (one fully connected layer) through a file-backed
// cache, compares its output with a runtime without a cache, and prints PASS.
// Run twice on one file: the second run (warm) packs nothing.
//
// usage: consumer CACHE_FILE
#include <cmath>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include <xnnpack.h>
#include <xnncache.h>

namespace {

constexpr size_t kBatch = 3, kIn = 64, kOut = 48;

void check(bool ok, const std::string& what) {
  if (!ok) throw std::runtime_error(what);
}

std::vector<float> run(xnn_weights_cache_t cache, const std::vector<float>& w, const std::vector<float>& b,
                       const std::vector<float>& input) {
  xnn_subgraph_t subgraph = nullptr;
  check(xnn_create_subgraph(2, 0, &subgraph) == xnn_status_success, "xnn_create_subgraph");
  const size_t in_dims[2] = {kBatch, kIn}, w_dims[2] = {kOut, kIn}, b_dims[1] = {kOut}, out_dims[2] = {kBatch, kOut};
  uint32_t in_id, w_id, b_id, out_id;
  check(xnn_define_tensor_value(subgraph, xnn_datatype_fp32, 2, in_dims, nullptr, 0, XNN_VALUE_FLAG_EXTERNAL_INPUT, &in_id) == xnn_status_success, "input");
  check(xnn_define_tensor_value(subgraph, xnn_datatype_fp32, 2, w_dims, w.data(), XNN_INVALID_VALUE_ID, 0, &w_id) == xnn_status_success, "weights");
  check(xnn_define_tensor_value(subgraph, xnn_datatype_fp32, 1, b_dims, b.data(), XNN_INVALID_VALUE_ID, 0, &b_id) == xnn_status_success, "bias");
  check(xnn_define_tensor_value(subgraph, xnn_datatype_fp32, 2, out_dims, nullptr, 1, XNN_VALUE_FLAG_EXTERNAL_OUTPUT, &out_id) == xnn_status_success, "output");
  check(xnn_define_fully_connected(subgraph, -INFINITY, INFINITY, in_id, w_id, b_id, out_id, 0) == xnn_status_success, "fully connected");
  xnn_runtime_t runtime = nullptr;
  const xnn_status created = xnn_create_runtime_v4(subgraph, cache, nullptr, nullptr, 0, &runtime);
  xnn_delete_subgraph(subgraph);
  check(created == xnn_status_success, "xnn_create_runtime_v4");
  std::vector<float> output(kBatch * kOut);
  const xnn_external_value external[2] = {{in_id, const_cast<float*>(input.data())}, {out_id, output.data()}};
  const bool ok = xnn_reshape_runtime(runtime) == xnn_status_success && xnn_setup_runtime_v2(runtime, 2, external) == xnn_status_success &&
                  xnn_invoke_runtime(runtime) == xnn_status_success;
  xnn_delete_runtime(runtime);
  check(ok, "reshape, setup or invoke");
  return output;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    check(argc == 2, "usage: consumer CACHE_FILE");
    check(xnn_initialize(nullptr) == xnn_status_success, "xnn_initialize");
    // XNNPACK may read a few bytes past the end of constant buffers.
    std::vector<float> w(kOut * kIn + 16), b(kOut + 16), input(kBatch * kIn + 16);
    for (size_t i = 0; i < w.size(); i++) w[i] = std::sin(0.13f * static_cast<float>(i));
    for (size_t i = 0; i < b.size(); i++) b[i] = 0.01f * static_cast<float>(i);
    for (size_t i = 0; i < input.size(); i++) input[i] = std::cos(0.29f * static_cast<float>(i));
    const std::vector<float> expected = run(nullptr, w, b, input);

    xnncache_options options = XNNCACHE_OPTIONS_INIT;
    options.path = argv[1];
    options.flags = XNNCACHE_FLAG_REQUIRE_FILE;
    xnncache* cache = nullptr;
    const xnncache_status status = xnncache_open(&options, &cache);
    check(status == XNNCACHE_OK, std::string("xnncache_open: ") + xnncache_status_name(status) + ": " + xnncache_last_error());
    check(xnncache_register_weights(cache, w.data(), w.size() * sizeof(float), "fc.weight") == XNNCACHE_OK, "register fc.weight");
    check(xnncache_register_weights(cache, b.data(), b.size() * sizeof(float), "fc.bias") == XNNCACHE_OK, "register fc.bias");
    const std::vector<float> got = run(xnncache_provider(cache), w, b, input);
    check(xnncache_finalize(cache) == XNNCACHE_OK, std::string("xnncache_finalize: ") + xnncache_last_error());
    check(std::memcmp(got.data(), expected.data(), got.size() * sizeof(float)) == 0, "outputs differ from a runtime without a cache");
    struct xnncache_stats stats;
    check(xnncache_stats(cache, &stats) == XNNCACHE_OK, "xnncache_stats");
    check(stats.backing == XNNCACHE_BACKING_FILE, "the cache is not file-backed");
    const bool warm = stats.file_state == XNNCACHE_FILE_REUSED;
    check(!warm || (stats.packed_bytes == 0 && stats.hits > 0), "a warm run packed weights");
    check(warm || stats.packed_bytes > 0, "a cold run packed nothing");
    std::printf("consumer: %s run, %llu entries, %llu bytes packed, %llu found, file %llu bytes\n", warm ? "warm" : "cold",
                static_cast<unsigned long long>(stats.entries), static_cast<unsigned long long>(stats.packed_bytes),
                static_cast<unsigned long long>(stats.found_bytes), static_cast<unsigned long long>(stats.file_size));
    xnncache_close(cache);
    std::printf("PASS\n");
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "consumer: FAIL: %s\n", e.what());
    return 1;
  }
}
