/* A C program that uses xnncache the way users will: open a cache on a file,
 * hand its provider to xnn_create_runtime_v4, finalize, read the stats; then
 * the drop-in layer. Exits 0 when every output matches a runtime built
 * without a cache. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <xnnpack.h>

#include "xnncache.h"

enum { BATCH = 4, IN = 96, OUT = 80 };

static float weights[OUT * IN + 16];
static float bias[OUT + 16];
static float input[BATCH * IN + 16];

#define CHECK(cond, ...)                 \
  do {                                   \
    if (!(cond)) {                       \
      fprintf(stderr, "c-smoke: ");      \
      fprintf(stderr, __VA_ARGS__);      \
      fprintf(stderr, "\n");             \
      exit(1);                           \
    }                                    \
  } while (0)

/* Collects what xnncache_list_names reports. */
struct listed {
  int count;
  char weights[64];
  int bias_is_null;
};
static void collect(void* user_data, const char* weights_name, const char* bias_name) {
  struct listed* l = (struct listed*) user_data;
  l->count++;
  snprintf(l->weights, sizeof(l->weights), "%s", weights_name);
  l->bias_is_null = bias_name == NULL;
}

/* Builds a fully connected layer, creates a runtime with `cache` (or none),
 * runs it, deletes it. */
static void run(xnn_weights_cache_t cache, float* output) {
  xnn_subgraph_t subgraph = NULL;
  CHECK(xnn_create_subgraph(2, 0, &subgraph) == xnn_status_success, "create subgraph");
  const size_t in_dims[2] = {BATCH, IN}, w_dims[2] = {OUT, IN}, b_dims[1] = {OUT}, out_dims[2] = {BATCH, OUT};
  uint32_t in_id, w_id, b_id, out_id;
  CHECK(xnn_define_tensor_value(subgraph, xnn_datatype_fp32, 2, in_dims, NULL, 0, XNN_VALUE_FLAG_EXTERNAL_INPUT, &in_id) == xnn_status_success, "input");
  CHECK(xnn_define_tensor_value(subgraph, xnn_datatype_fp32, 2, w_dims, weights, XNN_INVALID_VALUE_ID, 0, &w_id) == xnn_status_success, "weights");
  CHECK(xnn_define_tensor_value(subgraph, xnn_datatype_fp32, 1, b_dims, bias, XNN_INVALID_VALUE_ID, 0, &b_id) == xnn_status_success, "bias");
  CHECK(xnn_define_tensor_value(subgraph, xnn_datatype_fp32, 2, out_dims, NULL, 1, XNN_VALUE_FLAG_EXTERNAL_OUTPUT, &out_id) == xnn_status_success, "output");
  CHECK(xnn_define_fully_connected(subgraph, -INFINITY, INFINITY, in_id, w_id, b_id, out_id, 0) == xnn_status_success, "fully connected");
  xnn_runtime_t runtime = NULL;
  CHECK(xnn_create_runtime_v4(subgraph, cache, NULL, NULL, 0, &runtime) == xnn_status_success, "create runtime");
  xnn_delete_subgraph(subgraph);
  const struct xnn_external_value external[2] = {{in_id, input}, {out_id, output}};
  CHECK(xnn_reshape_runtime(runtime) == xnn_status_success, "reshape");
  CHECK(xnn_setup_runtime_v2(runtime, 2, external) == xnn_status_success, "setup");
  CHECK(xnn_invoke_runtime(runtime) == xnn_status_success, "invoke");
  xnn_delete_runtime(runtime);
}

int main(void) {
  CHECK(xnn_initialize(NULL) == xnn_status_success, "xnn_initialize");
  unsigned seed = 12345;
  for (size_t i = 0; i < OUT * IN; i++) weights[i] = (float) ((seed = seed * 1103515245u + 12345u) >> 16 & 0xff) / 256.0f - 0.5f;
  for (size_t i = 0; i < OUT; i++) bias[i] = (float) i / OUT;
  for (size_t i = 0; i < BATCH * IN; i++) input[i] = (float) (i % 7) - 3.0f;

  static float expected[BATCH * OUT], got[BATCH * OUT];
  run(NULL, expected);

  /* The API: options, open, provider, finalize, stats, close. */
  xnncache_options options = XNNCACHE_OPTIONS_INIT;
  options.path = getenv("XNNCACHE_TEST_FILE");
  CHECK(options.path != NULL, "XNNCACHE_TEST_FILE is not set");
  xnncache* cache = NULL;
  xnncache_status status = xnncache_open(&options, &cache);
  CHECK(status == XNNCACHE_OK, "xnncache_open: %s: %s", xnncache_status_name(status), xnncache_last_error());
  /* Stable identities for the constants, so a later process finds their packed form. */
  CHECK(xnncache_register_weights(cache, weights, sizeof(weights), "fc.weight") == XNNCACHE_OK, "register: %s", xnncache_last_error());
  CHECK(xnncache_register_weights(cache, bias, sizeof(bias), NULL) == XNNCACHE_OK, "register: %s", xnncache_last_error());
  for (int round = 0; round < 2; round++) {
    memset(got, 0, sizeof(got));
    run(xnncache_provider(cache), got);
    CHECK(memcmp(got, expected, sizeof(got)) == 0, "outputs differ in round %d", round);
    CHECK(xnncache_finalize(cache) == XNNCACHE_OK, "finalize: %s", xnncache_last_error());
    /* The write-back runs in the background; wait for the commit. */
    CHECK(xnncache_wait(cache, UINT32_MAX) == XNNCACHE_OK, "wait: %s", xnncache_last_error());
  }
  struct xnncache_stats stats;
  CHECK(xnncache_stats(cache, &stats) == XNNCACHE_OK, "stats");
  CHECK(stats.entries == 1 && stats.hits == 1, "entries %llu hits %llu", (unsigned long long) stats.entries, (unsigned long long) stats.hits);
  CHECK(stats.backing == XNNCACHE_BACKING_FILE && stats.file_size > 0, "not file-backed");
  /* The generation this program's xnnpack.h declares: v1 keys have three
   * fields; v3 providers have an eighth slot (alias_data). */
  unsigned expected_generation = sizeof(struct xnn_weights_cache_look_up_key) <= 3 * sizeof(void*) ? 1
                                 : sizeof(struct xnn_weights_cache_provider) > 7 * sizeof(void*) ? 3 : 2;
  CHECK(stats.abi_generation == expected_generation, "ABI generation %u, xnnpack.h declares %u", stats.abi_generation, expected_generation);
  CHECK(stats.file_state == XNNCACHE_FILE_NEW && stats.commits == 1 && stats.not_persisted == 0, "not persisted");
  printf("c-smoke: %llu bytes packed into %s (%llu bytes), found %llu by look-up\n", (unsigned long long) stats.packed_bytes,
         options.path, (unsigned long long) stats.file_size, (unsigned long long) stats.found_bytes);
  xnncache_close(cache);

  /* A second open of the same file finds the packed weights without packing.
   * Its index names them from the start: the weights' registered name, and
   * no bias name (the bias was registered by content). */
  CHECK(xnncache_open(&options, &cache) == XNNCACHE_OK, "reopen: %s", xnncache_last_error());
  struct listed listed = {0, "", 0};
  CHECK(xnncache_list_names(cache, collect, &listed) == XNNCACHE_OK, "list names: %s", xnncache_last_error());
  CHECK(listed.count == 1 && strcmp(listed.weights, "fc.weight") == 0 && listed.bias_is_null, "names at open: %d, '%s'", listed.count,
        listed.weights);
  CHECK(xnncache_list_names(cache, NULL, NULL) == XNNCACHE_INVALID_ARGUMENT, "NULL callback accepted");
  CHECK(xnncache_register_weights(cache, weights, sizeof(weights), "fc.weight") == XNNCACHE_OK, "register");
  CHECK(xnncache_register_weights(cache, bias, sizeof(bias), NULL) == XNNCACHE_OK, "register");
  run(xnncache_provider(cache), got);
  CHECK(memcmp(got, expected, sizeof(got)) == 0, "outputs differ after reopening");
  CHECK(xnncache_stats(cache, &stats) == XNNCACHE_OK, "stats");
  CHECK(stats.file_state == XNNCACHE_FILE_REUSED && stats.packed_bytes == 0 && stats.hits == 1, "not reused");
  CHECK(xnncache_verify(cache) == XNNCACHE_OK, "verify: %s", xnncache_last_error());
  /* Unregistered, the buffers are only addresses again: XNNPACK packs, and
   * the bytes fold into the stored copy. */
  CHECK(xnncache_unregister_weights(cache, weights, sizeof(weights)) == XNNCACHE_OK, "unregister");
  CHECK(xnncache_unregister_weights(cache, bias, sizeof(bias)) == XNNCACHE_OK, "unregister");
  CHECK(xnncache_unregister_weights(cache, NULL, 4) == XNNCACHE_INVALID_ARGUMENT, "NULL unregistered");
  run(xnncache_provider(cache), got);
  CHECK(memcmp(got, expected, sizeof(got)) == 0, "outputs differ after unregistering");
  CHECK(xnncache_stats(cache, &stats) == XNNCACHE_OK, "stats");
  CHECK(stats.packed_bytes > 0 && stats.duplicates_folded == 1 && stats.entries == 1, "unregistered weights were found by their old identity");
  xnncache_close(cache);

  /* Errors are statuses with messages, never crashes. */
  xnncache_options zeroed;
  memset(&zeroed, 0, sizeof(zeroed));
  CHECK(xnncache_open(&zeroed, &cache) == XNNCACHE_INVALID_ARGUMENT, "zeroed options accepted");
  CHECK(strlen(xnncache_last_error()) > 0, "no message");
  CHECK(xnncache_open(NULL, &cache) == XNNCACHE_INVALID_ARGUMENT, "NULL options accepted");

  /* The drop-in layer: XNNPACK's weights-cache calls with an xnncache_ prefix. */
  xnn_weights_cache_t dropin = NULL;
  CHECK(xnncache_create_weights_cache(&dropin) == xnn_status_success, "drop-in create");
  run(dropin, got);
  CHECK(memcmp(got, expected, sizeof(got)) == 0, "drop-in outputs differ");
  CHECK(!xnncache_weights_cache_is_finalized(dropin), "finalized before finalize");
  CHECK(xnncache_finalize_weights_cache(dropin, xnn_weights_cache_finalization_kind_soft) == xnn_status_success, "drop-in finalize");
  CHECK(xnncache_weights_cache_is_finalized(dropin), "not finalized after finalize");
  /* Its xnncache, borrowed, for the rest of the C API. */
  xnncache* borrowed = NULL;
  CHECK(xnncache_from_weights_cache(dropin, &borrowed) == XNNCACHE_OK && borrowed != NULL, "drop-in accessor");
  CHECK(xnncache_provider(borrowed) == dropin, "the accessor's cache has another provider");
  struct xnncache_stats dropin_stats;
  memset(&dropin_stats, 0, sizeof(dropin_stats));
  CHECK(xnncache_wait(borrowed, UINT32_MAX) == XNNCACHE_OK, "drop-in wait");
  CHECK(xnncache_stats(borrowed, &dropin_stats) == XNNCACHE_OK && dropin_stats.entries > 0, "drop-in stats");
  run(dropin, got);
  CHECK(memcmp(got, expected, sizeof(got)) == 0, "drop-in outputs differ after finalize");
  CHECK(xnncache_delete_weights_cache(dropin) == xnn_status_success, "drop-in delete");
  CHECK(xnncache_delete_weights_cache(dropin) != xnn_status_success, "double delete accepted");
  CHECK(xnncache_stats(borrowed, &dropin_stats) == XNNCACHE_INVALID_ARGUMENT, "the borrowed handle outlived its weights cache");

  printf("c-smoke-ok\n");
  return 0;
}
