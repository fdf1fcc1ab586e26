/* A C program built against an installed xnncache with pkg-config only
 * (scripts/test-consumers.sh): one fully connected layer through a
 * file-backed cache, compared with a runtime without a cache; prints PASS.
 * Run twice on one file: the second run (warm) packs nothing.
 *
 * usage: pkgconfig-consumer CACHE_FILE */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include <xnnpack.h>
#include <xnncache.h>

enum { BATCH = 2, IN = 40, OUT = 24 };

static float weights[OUT * IN + 16], bias[OUT + 16], input[BATCH * IN + 16];

#define CHECK(cond, what)                                   \
  do {                                                      \
    if (!(cond)) {                                          \
      fprintf(stderr, "pkgconfig-consumer: FAIL: %s\n", what); \
      return 1;                                             \
    }                                                       \
  } while (0)

static int run(xnn_weights_cache_t cache, float* output) {
  xnn_subgraph_t subgraph = NULL;
  CHECK(xnn_create_subgraph(2, 0, &subgraph) == xnn_status_success, "xnn_create_subgraph");
  const size_t in_dims[2] = {BATCH, IN}, w_dims[2] = {OUT, IN}, b_dims[1] = {OUT}, out_dims[2] = {BATCH, OUT};
  uint32_t in_id, w_id, b_id, out_id;
  CHECK(xnn_define_tensor_value(subgraph, xnn_datatype_fp32, 2, in_dims, NULL, 0, XNN_VALUE_FLAG_EXTERNAL_INPUT, &in_id) == xnn_status_success, "input");
  CHECK(xnn_define_tensor_value(subgraph, xnn_datatype_fp32, 2, w_dims, weights, XNN_INVALID_VALUE_ID, 0, &w_id) == xnn_status_success, "weights");
  CHECK(xnn_define_tensor_value(subgraph, xnn_datatype_fp32, 1, b_dims, bias, XNN_INVALID_VALUE_ID, 0, &b_id) == xnn_status_success, "bias");
  CHECK(xnn_define_tensor_value(subgraph, xnn_datatype_fp32, 2, out_dims, NULL, 1, XNN_VALUE_FLAG_EXTERNAL_OUTPUT, &out_id) == xnn_status_success, "output");
  CHECK(xnn_define_fully_connected(subgraph, -INFINITY, INFINITY, in_id, w_id, b_id, out_id, 0) == xnn_status_success, "fully connected");
  xnn_runtime_t runtime = NULL;
  const enum xnn_status created = xnn_create_runtime_v4(subgraph, cache, NULL, NULL, 0, &runtime);
  xnn_delete_subgraph(subgraph);
  CHECK(created == xnn_status_success, "xnn_create_runtime_v4");
  const struct xnn_external_value external[2] = {{in_id, input}, {out_id, output}};
  const int ok = xnn_reshape_runtime(runtime) == xnn_status_success && xnn_setup_runtime_v2(runtime, 2, external) == xnn_status_success &&
                 xnn_invoke_runtime(runtime) == xnn_status_success;
  xnn_delete_runtime(runtime);
  CHECK(ok, "reshape, setup or invoke");
  return 0;
}

int main(int argc, char** argv) {
  CHECK(argc == 2, "usage: pkgconfig-consumer CACHE_FILE");
  CHECK(xnn_initialize(NULL) == xnn_status_success, "xnn_initialize");
  for (size_t i = 0; i < sizeof(weights) / sizeof(float); i++) weights[i] = sinf(0.07f * (float) i);
  for (size_t i = 0; i < sizeof(bias) / sizeof(float); i++) bias[i] = 0.02f * (float) i;
  for (size_t i = 0; i < sizeof(input) / sizeof(float); i++) input[i] = cosf(0.31f * (float) i);
  static float expected[BATCH * OUT], got[BATCH * OUT];
  if (run(NULL, expected) != 0) return 1;

  xnncache_options options = XNNCACHE_OPTIONS_INIT;
  options.path = argv[1];
  options.flags = XNNCACHE_FLAG_REQUIRE_FILE;
  xnncache* cache = NULL;
  const xnncache_status status = xnncache_open(&options, &cache);
  if (status != XNNCACHE_OK) fprintf(stderr, "%s: %s\n", xnncache_status_name(status), xnncache_last_error());
  CHECK(status == XNNCACHE_OK, "xnncache_open");
  CHECK(xnncache_register_weights(cache, weights, sizeof(weights), "fc.weight") == XNNCACHE_OK, "register fc.weight");
  CHECK(xnncache_register_weights(cache, bias, sizeof(bias), "fc.bias") == XNNCACHE_OK, "register fc.bias");
  if (run(xnncache_provider(cache), got) != 0) return 1;
  CHECK(xnncache_finalize(cache) == XNNCACHE_OK, "xnncache_finalize");
  CHECK(memcmp(got, expected, sizeof(got)) == 0, "outputs differ from a runtime without a cache");
  struct xnncache_stats stats;
  CHECK(xnncache_stats(cache, &stats) == XNNCACHE_OK, "xnncache_stats");
  CHECK(stats.backing == XNNCACHE_BACKING_FILE, "the cache is not file-backed");
  const int warm = stats.file_state == XNNCACHE_FILE_REUSED;
  CHECK(!warm || (stats.packed_bytes == 0 && stats.hits > 0), "a warm run packed weights");
  CHECK(warm || stats.packed_bytes > 0, "a cold run packed nothing");
  printf("pkgconfig-consumer: %s run, %llu entries, %llu bytes packed, %llu found\n", warm ? "warm" : "cold",
         (unsigned long long) stats.entries, (unsigned long long) stats.packed_bytes, (unsigned long long) stats.found_bytes);
  xnncache_close(cache);
  printf("PASS\n");
  return 0;
}
