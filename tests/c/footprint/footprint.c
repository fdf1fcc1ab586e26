/* Calls every function of xnncache's C API (include/xnncache.h) and every
 * slot of its provider, the way XNNPACK and an app do, and exits 0 when each
 * result is the one expected. scripts/footprint.sh links it twice: with
 * libxnncache.a, and with stub.c (the same symbols, doing nothing) in its
 * place; the difference of the stripped sizes is what xnncache adds to an
 * app. Built against tests/c/footprint/xnnpack.h, so no XNNPACK is needed.
 *
 * Usage: footprint [CACHE_FILE]   (without one, a temporary file is used) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "xnncache.h"

static int failures;
#define EXPECT(cond)                                                      \
  do {                                                                    \
    if (!(cond)) {                                                        \
      fprintf(stderr, "footprint: line %d: %s failed (last error: %s)\n", \
              __LINE__, #cond, xnncache_last_error());                    \
      failures++;                                                         \
    }                                                                     \
  } while (0)

static int logged;
static void on_log(enum xnncache_log_level level, const char* message, void* user_data) {
  (void) level;
  (void) message;
  (*(int*) user_data)++;
}

static int names;
static void on_name(void* user_data, const char* weights_name, const char* bias_name) {
  (void) bias_name;
  if (strcmp(weights_name, "layer0.weight") == 0) (*(int*) user_data)++;
}

/* One packing through the provider, as XNNPACK does it: look up, reserve,
 * fill, insert, then find it again and read it through offset_to_addr. */
static void pack(struct xnn_weights_cache_provider* p, const float* weights, size_t n, int byte) {
  struct xnn_weights_cache_look_up_key key = {42, weights, NULL, 0};
  EXPECT(p->look_up(p->context, &key) == (size_t) -1);
  void* space = p->reserve_space(p->context, n);
  EXPECT(space != NULL);
  if (space == NULL) return;
  memset(space, byte, n);
  size_t offset = p->look_up_or_insert(p->context, &key, space, n);
  EXPECT(offset != (size_t) -1);
  EXPECT(p->look_up(p->context, &key) == offset);
  const unsigned char* at = p->offset_to_addr(p->context, offset);
  EXPECT(at != NULL && at[0] == byte && at[n - 1] == byte);
}

int main(int argc, char** argv) {
  static float weights[4096];
  for (size_t i = 0; i < sizeof(weights) / sizeof(weights[0]); i++) weights[i] = (float) i;
  char path[256];
  if (argc > 1) {
    snprintf(path, sizeof(path), "%s", argv[1]);
  } else {
    const char* tmp = getenv("TMPDIR");
    snprintf(path, sizeof(path), "%s/xnncache-footprint-%d.bin", tmp ? tmp : "/tmp", (int) getpid());
  }
  unlink(path);

  EXPECT(xnncache_set_log_callback(on_log, &logged) == XNNCACHE_OK);
  /* Errors are statuses with a message. */
  xnncache* cache = NULL;
  EXPECT(xnncache_open(NULL, &cache) == XNNCACHE_INVALID_ARGUMENT);
  EXPECT(strstr(xnncache_last_error(), "NULL") != NULL);
  EXPECT(strcmp(xnncache_status_name(XNNCACHE_CORRUPT), "XNNCACHE_CORRUPT") == 0);
  xnncache_options bad = XNNCACHE_OPTIONS_INIT;
  bad.key_size = 3;
  EXPECT(xnncache_open(&bad, &cache) == XNNCACHE_UNSUPPORTED_ABI);

  /* A file-backed cache: pack, finalize, wait for the commit, reopen. */
  for (int launch = 0; launch < 2; launch++) {
    xnncache_options options = XNNCACHE_OPTIONS_INIT;
    options.path = path;
    options.flags = launch == 1 ? XNNCACHE_FLAG_VERIFY : 0;
    EXPECT(xnncache_open(&options, &cache) == XNNCACHE_OK);
    EXPECT(xnncache_register_weights(cache, weights, sizeof(weights), "layer0.weight") == XNNCACHE_OK);
    struct xnn_weights_cache_provider* p = xnncache_provider(cache);
    EXPECT(p != NULL);
    if (p == NULL) break;
    if (launch == 0) {
      pack(p, weights, 8192, 7);
    } else {
      struct xnn_weights_cache_look_up_key key = {42, weights, NULL, 0};
      EXPECT(p->look_up(p->context, &key) != (size_t) -1);
    }
    EXPECT(xnncache_finalize(cache) == XNNCACHE_OK);
    EXPECT(p->is_finalized(p->context));
    EXPECT(xnncache_wait(cache, UINT32_MAX) == XNNCACHE_OK);
    struct xnncache_stats stats;
    EXPECT(xnncache_stats(cache, &stats) == XNNCACHE_OK);
    EXPECT(stats.backing == XNNCACHE_BACKING_FILE);
    EXPECT(stats.file_state == (launch == 0 ? XNNCACHE_FILE_NEW : XNNCACHE_FILE_REUSED));
    EXPECT(stats.entries == 1);
    EXPECT(xnncache_verify(cache) == XNNCACHE_OK);
    names = 0;
    EXPECT(xnncache_list_names(cache, on_name, &names) == XNNCACHE_OK);
    EXPECT(names == 1);
    if (launch == 1) EXPECT(xnncache_compact(cache) == XNNCACHE_OK);
    EXPECT(xnncache_unregister_weights(cache, weights, sizeof(weights)) == XNNCACHE_OK);
    xnncache_close(cache);
    EXPECT(xnncache_stats(cache, &stats) == XNNCACHE_INVALID_ARGUMENT);
  }

  /* The drop-in layer (xnn_create_weights_cache's replacement), in memory. */
  struct xnn_weights_cache_provider* dropin = NULL;
  EXPECT(xnncache_create_weights_cache(&dropin) == xnn_status_success);
  if (dropin != NULL) {
    pack(dropin, weights + 1, 4096, 9);
    EXPECT(xnncache_finalize_weights_cache(dropin, xnn_weights_cache_finalization_kind_soft) == xnn_status_success);
    EXPECT(xnncache_weights_cache_is_finalized(dropin));
    EXPECT(xnncache_delete_weights_cache(dropin) == xnn_status_success);
  }
  struct xnn_weights_cache_provider* sized = NULL;
  EXPECT(xnncache_create_weights_cache_with_size(1 << 20, &sized) == xnn_status_success);
  if (sized != NULL) EXPECT(xnncache_delete_weights_cache(sized) == xnn_status_success);
  /* The plain symbols behind the header's macros (they assume ABI v1). */
  struct xnn_weights_cache_provider* plain = NULL;
  EXPECT((xnncache_create_weights_cache)(&plain) == xnn_status_success);
  if (plain != NULL) EXPECT(xnncache_delete_weights_cache(plain) == xnn_status_success);
  EXPECT((xnncache_create_weights_cache_with_size)(4096, &plain) == xnn_status_success);
  if (plain != NULL) EXPECT(xnncache_delete_weights_cache(plain) == xnn_status_success);

  unlink(path);
  if (failures == 0) printf("footprint: every call of the C API returned what was expected\n");
  return failures == 0 ? 0 : 1;
}
