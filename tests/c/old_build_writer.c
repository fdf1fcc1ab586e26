/* A process of an older xnncache build (39d62c0, format version 1) that packs
 * one weight into a cache file and commits it, the way XNNPACK drives the
 * provider: used by tests/two_builds.rs, linked with that build's library.
 * The declarations are that build's C API, written out here so that this
 * program needs neither its header nor XNNPACK's.
 *
 * usage: old_build_writer PATH BUILD_ID_HEX NAME SEED BYTE SIZE
 * prints "old-writer state=<file state> commits=<n>" and exits 0. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct key_v1 { uint32_t seed; const void *kernel; const void *bias; };
struct provider_v1 {
  void *context;
  size_t (*look_up)(void *, const struct key_v1 *);
  void *(*reserve_space)(void *, size_t);
  size_t (*look_up_or_insert)(void *, const struct key_v1 *, void *, size_t);
  int (*is_finalized)(void *);
  void *(*offset_to_addr)(void *, size_t);
  int (*delete_cache)(void *);
};
struct options {
  uint32_t options_size, key_size, provider_size, flags;
  const char *path;
  int32_t fd;
  uint32_t compact_percent;
  const void *build_id;
  size_t build_id_size;
  uint64_t address_space;
};
struct stats { uint64_t fields[16]; uint32_t backing, abi_generation, file_state, reserved; };
struct xnncache;
int xnncache_open(const struct options *, struct xnncache **);
struct provider_v1 *xnncache_provider(struct xnncache *);
int xnncache_register_weights(struct xnncache *, const void *, size_t, const char *);
int xnncache_finalize(struct xnncache *);
int xnncache_stats(const struct xnncache *, struct stats *);
void xnncache_close(struct xnncache *);
const char *xnncache_last_error(void);

#define SYNC_WRITEBACK 8

int main(int argc, char **argv) {
  if (argc != 7) return 2;
  unsigned char id[64];
  size_t id_len = strlen(argv[2]) / 2;
  if (id_len > sizeof id) return 2;
  for (size_t i = 0; i < id_len; i++) sscanf(argv[2] + 2 * i, "%2hhx", &id[i]);
  struct options o = {sizeof o, sizeof(struct key_v1), sizeof(struct provider_v1), SYNC_WRITEBACK, argv[1], -1, 0, id, id_len, 0};
  struct xnncache *c = NULL;
  if (xnncache_open(&o, &c) != 0) { fprintf(stderr, "open: %s\n", xnncache_last_error()); return 1; }
  static unsigned char weights[256];
  memset(weights, argv[3][0], sizeof weights);
  if (xnncache_register_weights(c, weights, sizeof weights, argv[3]) != 0) return 1;
  struct provider_v1 *p = xnncache_provider(c);
  struct key_v1 k = {(uint32_t) atoi(argv[4]), weights, NULL};
  size_t size = (size_t) atol(argv[6]);
  if (p->look_up(p->context, &k) != SIZE_MAX) { fprintf(stderr, "found already\n"); return 1; }
  void *space = p->reserve_space(p->context, size);
  if (space == NULL) return 1;
  memset(space, atoi(argv[5]), size);
  if (p->look_up_or_insert(p->context, &k, space, size) == SIZE_MAX) return 1;
  if (xnncache_finalize(c) != 0) { fprintf(stderr, "finalize: %s\n", xnncache_last_error()); return 1; }
  struct stats s;
  memset(&s, 0, sizeof s);
  xnncache_stats(c, &s);
  printf("old-writer state=%u commits=%llu\n", s.file_state, (unsigned long long) s.fields[13]);
  xnncache_close(c);
  return 0;
}
