/* The few declarations of XNNPACK's xnnpack.h that include/xnncache.h uses,
 * for the footprint program (footprint.c), which links xnncache without
 * XNNPACK. The structs have the v3 layout (see src/abi.rs); a real
 * application includes XNNPACK's own header instead of this one. */
#ifndef XNNCACHE_FOOTPRINT_XNNPACK_H
#define XNNCACHE_FOOTPRINT_XNNPACK_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum xnn_status {
  xnn_status_success = 0,
  xnn_status_uninitialized = 1,
  xnn_status_invalid_parameter = 2,
  xnn_status_invalid_state = 3,
};

enum xnn_weights_cache_finalization_kind {
  xnn_weights_cache_finalization_kind_hard,
  xnn_weights_cache_finalization_kind_soft,
};

struct xnn_weights_cache_look_up_key {
  uint32_t seed;
  const void* kernel;
  const void* bias;
  uint32_t fingerprint_id;
};

struct xnn_weights_cache_provider {
  void* context;
  size_t (*look_up)(void* context, const struct xnn_weights_cache_look_up_key* key);
  void* (*reserve_space)(void* context, size_t n);
  size_t (*look_up_or_insert)(void* context, const struct xnn_weights_cache_look_up_key* key, void* ptr, size_t size);
  bool (*is_finalized)(void* context);
  void* (*offset_to_addr)(void* context, size_t offset);
  enum xnn_status (*delete_cache)(void* context);
  enum xnn_status (*alias_data)(void* context, void* alias, void* original);
};

static inline const void* xnn_experimental_get_build_identifier_data(void) { return "xnncache-footprint"; }
static inline size_t xnn_experimental_get_build_identifier_size(void) { return 18; }
#endif
