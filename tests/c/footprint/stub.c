/* Every symbol of xnncache's C API, doing nothing: footprint.c linked with
 * this file instead of libxnncache.a is the baseline that
 * scripts/footprint.sh subtracts (it never runs). */
#define XNNCACHE_NO_ABI_MACROS
#include "xnncache.h"

enum xnncache_status xnncache_open(const struct xnncache_options* o, struct xnncache** c) { (void) o; (void) c; return XNNCACHE_INTERNAL_ERROR; }
struct xnn_weights_cache_provider* xnncache_provider(struct xnncache* c) { (void) c; return NULL; }
enum xnncache_status xnncache_finalize(struct xnncache* c) { (void) c; return XNNCACHE_INTERNAL_ERROR; }
enum xnncache_status xnncache_wait(struct xnncache* c, uint32_t t) { (void) c; (void) t; return XNNCACHE_INTERNAL_ERROR; }
enum xnncache_status xnncache_register_weights(struct xnncache* c, const void* d, size_t s, const char* n) { (void) c; (void) d; (void) s; (void) n; return XNNCACHE_INTERNAL_ERROR; }
enum xnncache_status xnncache_unregister_weights(struct xnncache* c, const void* d, size_t s) { (void) c; (void) d; (void) s; return XNNCACHE_INTERNAL_ERROR; }
enum xnncache_status xnncache_set_log_callback(xnncache_log_callback f, void* u) { (void) f; (void) u; return XNNCACHE_INTERNAL_ERROR; }
enum xnncache_status xnncache_verify(struct xnncache* c) { (void) c; return XNNCACHE_INTERNAL_ERROR; }
enum xnncache_status xnncache_compact(struct xnncache* c) { (void) c; return XNNCACHE_INTERNAL_ERROR; }
enum xnncache_status xnncache_list_names(const struct xnncache* c, xnncache_name_callback f, void* u) { (void) c; (void) f; (void) u; return XNNCACHE_INTERNAL_ERROR; }
enum xnncache_status xnncache_stats(const struct xnncache* c, struct xnncache_stats* s) { (void) c; (void) s; return XNNCACHE_INTERNAL_ERROR; }
void xnncache_close(struct xnncache* c) { (void) c; }
const char* xnncache_status_name(int s) { (void) s; return ""; }
const char* xnncache_last_error(void) { return ""; }
enum xnn_status xnncache_create_weights_cache_with_size(size_t s, struct xnn_weights_cache_provider** o) { (void) s; (void) o; return xnn_status_invalid_state; }
enum xnn_status xnncache_create_weights_cache(struct xnn_weights_cache_provider** o) { (void) o; return xnn_status_invalid_state; }
enum xnn_status xnncache_create_weights_cache_for_abi(uint32_t k, uint32_t p, const void* b, size_t bs, size_t s, struct xnn_weights_cache_provider** o) {
  (void) k; (void) p; (void) b; (void) bs; (void) s; (void) o;
  return xnn_status_invalid_state;
}
enum xnn_status xnncache_finalize_weights_cache(struct xnn_weights_cache_provider* c, enum xnn_weights_cache_finalization_kind k) { (void) c; (void) k; return xnn_status_invalid_state; }
bool xnncache_weights_cache_is_finalized(struct xnn_weights_cache_provider* c) { (void) c; return false; }
enum xnn_status xnncache_delete_weights_cache(struct xnn_weights_cache_provider* c) { (void) c; return xnn_status_invalid_state; }
