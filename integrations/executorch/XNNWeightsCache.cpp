// A drop-in replacement for ExecuTorch's
// backends/xnnpack/runtime/XNNWeightsCache.cpp that keeps the class and its
// header (XNNWeightsCache.h) exactly as ExecuTorch ships them and hands the
// packed weights to xnncache (include/xnncache.h in the xnncache repository).
//
// What changes for ExecuTorch:
//   - packed weights live in xnncache's cache file (the `packed_cache_path`
//     backend option) or, without a path, in anonymous memory;
//   - every constant ExecuTorch loads by name (load_unpacked_data) is
//     registered with xnncache under that name, so the next process finds
//     its packed form by look-up and packs nothing;
//   - finalize_for_runtime commits new entries (crash-safe) and turns the
//     packed pages into clean, read-only file pages; if that fails the
//     runtime keeps working from memory and the failure is logged;
//   - from initialize_for_runtime on, get_packed_data_names() lists what the
//     file's index names; the program's constants the file holds packed are
//     never read, and the others (block scales XNNPACK checks) are read
//     exactly, all asked for at once at initialize_for_runtime, without the
//     kernel reading the packed ones around them.
//
// The class's private members are used as ExecuTorch's own file uses them
// where the header's inline functions read them (unpacked_data_,
// unpacked_data_to_name_, name_to_packed_data_metadata_, weights_cache_);
// the xnncache handle lives in a table keyed by the instance, since the
// header has no member for it.
//
// Environment:
//   XNNCACHE_ET_STATS=1   prints one line of xnncache stats per cache to
//                         stderr when the cache is destroyed (after its write-back):
//                         xnncache-executorch: {"path":"...","entries":...,...}
//   XNNCACHE_ET_VERIFY=1  checks every payload checksum when a cache file is
//                         opened (a file that fails is rebuilt); without it
//                         the header and index are checked, payloads are not.
//   XNNCACHE_ET_NO_PREFETCH=1, XNNCACHE_ET_NO_EXACT_READS=1
//                         turn off the warm launch's prefetch of the cache
//                         file, and the exact reads of the program's other
//                         constants (to measure what each brings).
//   XNNCACHE_ET_LATE_READS=1
//                         reads each of those constants when ExecuTorch
//                         loads it instead of all at initialize_for_runtime;
//   XNNCACHE_ET_WILLNEED_BYTES=N
//                         asks for them in MADV_WILLNEED calls of N bytes
//                         (default 131072; 0: one call per constant). Both
//                         for comparisons (docs/BENCHMARKS.md, issue 27).
//   XNNCACHE_ET_EAGER_WRITEBACK=1
//                         starts the write-back at once instead of yielding
//                         to the program's computation (for comparisons).
//   XNNCACHE_ET_SYNC_WRITEBACK=1
//                         finalize_for_runtime returns once the file is
//                         committed, as ExecuTorch's own class does.
//   XNNCACHE_ET_SIZE_CAP=BYTES
//                         packed bytes the cache file may keep (xnncache's
//                         size_cap): past them a commit drops the least
//                         recently written programs. Without it a model
//                         update still drops the version it replaces (each
//                         delegate's finalize_for_runtime ends a program).

#include <executorch/backends/xnnpack/runtime/XNNWeightsCache.h>
#include <executorch/runtime/core/error.h>
#include <executorch/runtime/platform/log.h>

#include <xnncache.h>
#include <xnnpack.h>

#include <algorithm>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#if defined(__linux__) || defined(__APPLE__)
#include <sys/mman.h>
#include <unistd.h>
#endif

namespace executorch {
namespace backends {
namespace xnnpack {
namespace delegate {

namespace {

// What an instance keeps besides the header's members.
struct CacheState {
  xnncache* cache = nullptr;
  // xnncache's own provider; weights_cache_ forwards to it.
  xnn_weights_cache_provider* real = nullptr;
  std::string path;
  bool open_attempted = false;
  // XNNPACK's own cache, only when xnncache could not open at all.
  xnn_weights_cache_t xnnpack_fallback = nullptr;
  // Heap-fallback bytes already logged.
  uint64_t reported_heap_bytes = 0;
  // The named-data keys whose packed form the file holds (weights and
  // biases, from its index): XNNPACK finds their packing by look-up and never
  // reads their bytes. Empty for a new file.
  std::unordered_set<std::string> packed_constants;
  // The other constants are read exactly (XNNCACHE_ET_NO_EXACT_READS unset),
  // decided once at initialize.
  bool exact_reads = true;
  // Those constants were all asked for at initialize_for_runtime
  // (start_reading_unpacked); else each is asked for when it is loaded.
  bool read_early = false;
};

// An environment switch: set, non-empty and not "0".
bool env_flag(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr && v[0] != '\0' && std::strcmp(v, "0") != 0;
}

// What xnncache_list_names fills at initialize_for_runtime.
struct Listing {
  std::unordered_map<std::string, PackedDataMeta>* metadata;
  std::unordered_set<std::string>* packed_constants;
};

// Bytes per MADV_WILLNEED call. Linux reads at most max(read_ahead_kb,
// the device's max_sectors_kb) of one call (force_page_cache_ra), and the
// rest of a longer range is not read ahead at all: under MADV_RANDOM each of
// its pages is then read alone when first touched. With the loop device of
// issue 27 (read_ahead_kb 2,560) that left 13 of the 15.7 MiB of llm_1b's
// head scales to 3,400 reads of 4 KiB; 64 MiB read that way took 1.5 s,
// against 30 to 40 ms for 128 KiB calls. 128 KiB is the kernel's default
// read_ahead_kb, the smallest a device gets unless an administrator lowers it.
constexpr uintptr_t kWillneedBytes = 128 << 10;

// Starts reading `[start, end)` (page-aligned, a file mapping) into the page
// cache, all of it, in requests the device queues together; returns before
// the reads complete.
void will_need(uintptr_t start, uintptr_t end) {
#if defined(__linux__) || defined(__APPLE__)
  static const uintptr_t chunk = [] {
    const char* v = std::getenv("XNNCACHE_ET_WILLNEED_BYTES");  // for comparisons; 0: one call
    return v != nullptr ? static_cast<uintptr_t>(std::strtoull(v, nullptr, 0)) : kWillneedBytes;
  }();
  for (uintptr_t at = start; at < end;) {
    const uintptr_t n = chunk == 0 ? end - at : std::min(chunk, end - at);
    madvise(reinterpret_cast<void*>(at), n, MADV_WILLNEED);
    at += n;
  }
#else
  (void)start;
  (void)end;
#endif
}

// A constant XNNPACK will read (a block scale it checks while the graph is
// defined, a tensor no packing replaces), of a program mapped from its file:
// read exactly its pages now, in large reads, and keep faults on it from
// reading around it. Without this, the kernel's read-around on the first
// fault (read_ahead_kb, often megabytes) also reads the neighbouring 4-bit
// weights, whose packing the cache file holds and which nothing reads.
// `asked`: the pages were asked for already (start_reading_unpacked); only
// keep faults from reading around them.
void read_exactly(const void* data, size_t size, bool asked) {
#if defined(__linux__) || defined(__APPLE__)
  const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  const uintptr_t start = reinterpret_cast<uintptr_t>(data) & ~(page - 1);
  const uintptr_t end = (reinterpret_cast<uintptr_t>(data) + size + page - 1) & ~(page - 1);
  // Hints: on memory that is not a file mapping they fail or do nothing.
  madvise(reinterpret_cast<void*>(start), end - start, MADV_RANDOM);
  if (!asked) {
    will_need(start, end);
  }
#else
  (void)data;
  (void)size;
  (void)asked;
#endif
}

// Starts reading, in key order, every constant of `map` but those in
// `packed` (whose packing the cache file holds and which nothing reads): all
// of them queued at once, where reading each as XNNPACK loads it waits for
// one constant's reads at a time while the graph is defined. Whether it could
// list them. The pages go to the page cache; each constant's own mapping,
// made when ExecuTorch loads it, finds them there (or in flight) and its
// faults read nothing around them.
bool start_reading_unpacked(
    const NamedDataMap* map,
    const std::unordered_set<std::string>& packed) {
#if defined(__linux__) || defined(__APPLE__)
  if (map == nullptr) {
    return false;
  }
  Result<uint32_t> keys = map->get_num_keys();
  if (!keys.ok()) {
    return false;
  }
  const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  for (uint32_t i = 0; i < keys.get(); ++i) {
    Result<const char*> key = map->get_key(i);
    if (!key.ok() || key.get() == nullptr || packed.count(key.get()) != 0) {
      continue;
    }
    Result<FreeableBuffer> data = map->get_data(key.get());
    if (!data.ok()) {
      continue;
    }
    const uintptr_t at = reinterpret_cast<uintptr_t>(data.get().data());
    will_need(at & ~(page - 1), (at + data.get().size() + page - 1) & ~(page - 1));
    data.get().Free();
  }
  return true;
#else
  (void)map;
  (void)packed;
  return false;
#endif
}

// xnncache's fallbacks (heap instead of file, a rebuilt file, another
// process's writer lock, a failed background write-back), once each.
void log_to_executorch(xnncache_log_level level, const char* message, void*) {
  if (level == XNNCACHE_LOG_ERROR) {
    ET_LOG(Error, "%s", message);
  } else {
    ET_LOG(Info, "%s", message);
  }
}

std::mutex& states_mutex() {
  static std::mutex mu;
  return mu;
}

std::unordered_map<const void*, std::unique_ptr<CacheState>>& states() {
  static auto* table =
      new std::unordered_map<const void*, std::unique_ptr<CacheState>>();
  return *table;
}

CacheState* state_of(const void* instance) {
  std::lock_guard<std::mutex> lock(states_mutex());
  auto it = states().find(instance);
  return it == states().end() ? nullptr : it->second.get();
}

// XNNPACK calls alias_data (provider ABI v3) when it converts an fp16/bf16
// constant to an fp32 copy; xnncache then answers look-ups of the copy
// through the registered original.
enum xnn_status forward_alias_data(void* context, void* alias, void* original) {
  CacheState* st = state_of(context);
  if (st == nullptr || st->real == nullptr || st->real->alias_data == nullptr) {
    return xnn_status_success;
  }
  return st->real->alias_data(st->real->context, alias, original);
}

void print_stats(const CacheState& st) {
  struct xnncache_stats s {};
  if (st.cache == nullptr || xnncache_stats(st.cache, &s) != XNNCACHE_OK) {
    return;
  }
  std::fprintf(
      stderr,
      "xnncache-executorch: {\"path\":\"%s\",\"entries\":%" PRIu64
      ",\"stored_bytes\":%" PRIu64 ",\"packed_bytes\":%" PRIu64
      ",\"look_ups\":%" PRIu64 ",\"hits\":%" PRIu64 ",\"found_bytes\":%" PRIu64
      ",\"heap_fallback_bytes\":%" PRIu64 ",\"file_size\":%" PRIu64
      ",\"sealed_bytes\":%" PRIu64 ",\"loaded_entries\":%" PRIu64
      ",\"not_persisted\":%" PRIu64 ",\"commits\":%" PRIu64
      ",\"dropped_entries\":%" PRIu64 ",\"dropped_bytes\":%" PRIu64
      ",\"backing\":%u,\"file_state\":%u}\n",
      st.path.c_str(),
      s.entries,
      s.stored_bytes,
      s.packed_bytes,
      s.look_ups,
      s.hits,
      s.found_bytes,
      s.heap_fallback_bytes,
      s.file_size,
      s.sealed_bytes,
      s.loaded_entries,
      s.not_persisted,
      s.commits,
      s.dropped_entries,
      s.dropped_bytes,
      s.backing,
      s.file_state);
}

} // namespace

XNNWeightsCache::XNNWeightsCache()
    : runtime_allocator_(nullptr),
      named_data_map_(nullptr),
      is_finalized_(false) {
  std::memset(&weights_cache_, 0, sizeof(weights_cache_));
  weights_cache_.context = this;
  weights_cache_.look_up = (size_t(*)(
      void*, const xnn_weights_cache_look_up_key*))XNNWeightsCache::look_up;
  weights_cache_.reserve_space =
      (void* (*)(void*, size_t))XNNWeightsCache::reserve_space;
  weights_cache_.look_up_or_insert =
      (size_t(*)(void*, const xnn_weights_cache_look_up_key*, void*, size_t))
          XNNWeightsCache::look_up_or_insert;
  weights_cache_.is_finalized = (bool (*)(void*))XNNWeightsCache::is_finalized;
  weights_cache_.offset_to_addr =
      (void* (*)(void*, size_t))XNNWeightsCache::offset_to_addr;
  weights_cache_.delete_cache =
      (enum xnn_status(*)(void*))XNNWeightsCache::delete_cache;
  weights_cache_.alias_data = forward_alias_data;
  std::lock_guard<std::mutex> lock(states_mutex());
  states()[this] = std::make_unique<CacheState>();
}

XNNWeightsCache::~XNNWeightsCache() {
  std::unique_ptr<CacheState> st;
  {
    std::lock_guard<std::mutex> lock(states_mutex());
    auto it = states().find(this);
    if (it != states().end()) {
      st = std::move(it->second);
      states().erase(it);
    }
  }
  if (st && st->cache != nullptr) {
    if (env_flag("XNNCACHE_ET_STATS")) {
      // After the write-back (which the close waits for anyway): what the
      // commit dropped is counted there.
      xnncache_wait(st->cache, UINT32_MAX);
      print_stats(*st);
    }
    for (FreeableBuffer& buffer : unpacked_data_) {
      xnncache_unregister_weights(st->cache, buffer.data(), buffer.size());
    }
  }
  for (FreeableBuffer& buffer : unpacked_data_) {
    buffer.Free();
  }
  unpacked_data_.clear();
  if (st && st->cache != nullptr) {
    xnncache_close(st->cache);
  }
  if (st && st->xnnpack_fallback != nullptr) {
    xnn_delete_weights_cache(st->xnnpack_fallback);
  }
}

void XNNWeightsCache::set_packed_cache_path(const std::string& path) {
  CacheState* st = state_of(this);
  if (st != nullptr && st->cache != nullptr && path != packed_cache_path_) {
    ET_LOG(
        Error,
        "xnncache: set_packed_cache_path(%s) after the cache was opened on '%s'; ignored",
        path.c_str(),
        packed_cache_path_.c_str());
    return;
  }
  packed_cache_path_ = path;
}

Error XNNWeightsCache::initialize_for_runtime(
    MemoryAllocator* runtime_allocator,
    const NamedDataMap* named_data_map) {
  runtime_allocator_ = runtime_allocator;
  named_data_map_ = named_data_map;
  is_finalized_ = false;

  CacheState* st = state_of(this);
  if (st == nullptr) {
    return Error::Internal;
  }
  if (st->open_attempted) {
    return st->real != nullptr ? Error::Ok : Error::Internal;
  }
  st->open_attempted = true;
  st->path = packed_cache_path_;

  xnncache_options options = XNNCACHE_OPTIONS_INIT;
  options.path = packed_cache_path_.empty() ? nullptr : packed_cache_path_.c_str();
  if (env_flag("XNNCACHE_ET_VERIFY")) {
    // Check every payload's checksum at open (reads the whole file once).
    options.flags |= XNNCACHE_FLAG_VERIFY;
  }
  if (env_flag("XNNCACHE_ET_NO_PREFETCH")) {
    // A warm file is then read as runtimes fault it in (for comparisons).
    options.flags |= XNNCACHE_FLAG_NO_PREFETCH;
  }
  if (env_flag("XNNCACHE_ET_EAGER_WRITEBACK")) {
    // The background write-back starts at once instead of waiting while the
    // process computes (for comparisons).
    options.flags |= XNNCACHE_FLAG_EAGER_WRITEBACK;
  }
  if (env_flag("XNNCACHE_ET_SYNC_WRITEBACK")) {
    // finalize_for_runtime returns once the file is written and committed
    // (ExecuTorch's own class does that; its tests expect it). By default
    // the write-back runs in the background and a cold load does not wait
    // for the disk; the file is complete when the cache instance goes.
    options.flags |= XNNCACHE_FLAG_SYNC_WRITEBACK;
  }
  if (const char* cap = std::getenv("XNNCACHE_ET_SIZE_CAP")) {
    char* end = nullptr;
    unsigned long long bytes = std::strtoull(cap, &end, 10);
    if (end != cap && *end == '\0') {
      options.size_cap = bytes;
    } else {
      ET_LOG(Error, "xnncache: XNNCACHE_ET_SIZE_CAP=%s is not a number of bytes; ignored", cap);
    }
  }
  static std::once_flag log_once;
  std::call_once(log_once, [] { xnncache_set_log_callback(log_to_executorch, nullptr); });
  xnncache_status status = xnncache_open(&options, &st->cache);
  if (status != XNNCACHE_OK && options.path != nullptr) {
    ET_LOG(
        Error,
        "xnncache: open(%s) failed: %s: %s; packing into memory",
        packed_cache_path_.c_str(),
        xnncache_status_name(status),
        xnncache_last_error());
    options.path = nullptr;
    status = xnncache_open(&options, &st->cache);
  }
  if (status != XNNCACHE_OK) {
    // Not even memory (an XNNPACK whose provider ABI xnncache does not
    // know, or no memory): pack with XNNPACK's own in-memory cache.
    ET_LOG(
        Error,
        "xnncache: open failed: %s: %s; using XNNPACK's weights cache",
        xnncache_status_name(status),
        xnncache_last_error());
    st->cache = nullptr;
    if (xnn_create_weights_cache(&st->xnnpack_fallback) != xnn_status_success) {
      st->xnnpack_fallback = nullptr;
      return Error::Internal;
    }
    st->real = st->xnnpack_fallback;
    return Error::Ok;
  }
  const char* warning = xnncache_last_error();
  if (warning != nullptr && warning[0] != '\0') {
    ET_LOG(Info, "xnncache: %s", warning);
  }
  st->real = xnncache_provider(st->cache);

  // What the file holds, by the names ExecuTorch's class gives packed
  // weights (the weights' named-data key, then the bias's), as that class
  // reads them from its own file: get_packed_data_names() reports them from
  // here on, and delete_packed_data keeps them (their bytes live in the file).
  // xnncache reads them from the index it read at open, not from payloads.
  st->exact_reads = !env_flag("XNNCACHE_ET_NO_EXACT_READS");
  Listing listing{&name_to_packed_data_metadata_, &st->packed_constants};
  xnncache_list_names(
      st->cache,
      [](void* user, const char* weights_name, const char* bias_name) {
        auto* l = static_cast<Listing*>(user);
        std::string name(weights_name);
        l->packed_constants->insert(name);
        if (bias_name != nullptr) {
          name.append(bias_name);
          l->packed_constants->insert(bias_name);
        }
        (*l->metadata)[name].from_load = true;
      },
      &listing);

  if (st->exact_reads && !st->packed_constants.empty() && !env_flag("XNNCACHE_ET_LATE_READS")) {
    // Start reading every constant XNNPACK will read (those the file does
    // not hold packed) now, all at once, rather than each when it is loaded
    // (issue 27: llm_1b's warm launch from disk on 4 KiB folios, 7 rounds,
    // 657 -> 576 ms; load_method 590 -> 176 ms).
    st->read_early = start_reading_unpacked(named_data_map, st->packed_constants);
  }

  struct xnncache_stats s {};
  if (xnncache_stats(st->cache, &s) == XNNCACHE_OK && options.path != nullptr) {
    ET_LOG(
        Info,
        "xnncache: opened %s (file state %u, %" PRIu64 " entries loaded)",
        packed_cache_path_.c_str(),
        s.file_state,
        s.loaded_entries);
  }
  return Error::Ok;
}

Result<const uint8_t*> XNNWeightsCache::load_unpacked_data(
    const std::string& name) {
  if (named_data_map_ == nullptr) {
    return Error::InvalidState;
  }
  Result<FreeableBuffer> named_data = named_data_map_->get_data(name.c_str());
  if (!named_data.ok()) {
    ET_LOG(Error, "Failed to load constant data for key %s", name.c_str());
    return Error::InvalidExternalData;
  }
  const uint8_t* data_pointer =
      static_cast<const uint8_t*>(named_data.get().data());
  const size_t size = named_data.get().size();
  CacheState* st = state_of(this);
  if (st != nullptr && st->exact_reads && !st->packed_constants.empty() &&
      st->packed_constants.count(name) == 0) {
    read_exactly(data_pointer, size, st->read_early);
  }
  if (st != nullptr && st->cache != nullptr) {
    xnncache_status status =
        xnncache_register_weights(st->cache, data_pointer, size, name.c_str());
    if (status != XNNCACHE_OK) {
      // Still usable within this process; only not found by name next time.
      ET_LOG(
          Error,
          "xnncache: register_weights(%s) failed: %s: %s",
          name.c_str(),
          xnncache_status_name(status),
          xnncache_last_error());
    }
  }
  unpacked_data_.push_back(std::move(named_data.get()));
  unpacked_data_to_name_[data_pointer] = name;
  return data_pointer;
}

Result<std::vector<std::string>> XNNWeightsCache::finalize_for_runtime() {
  is_finalized_ = true;
  CacheState* st = state_of(this);

  // Commit what this runtime packed and seal its pages. A failure here
  // (disk full, read-only folder, ...) leaves the packed weights valid in
  // memory: the runtime works, only the next process packs again.
  bool persisted = false;
  if (st != nullptr && st->cache != nullptr) {
    xnncache_status status = xnncache_finalize(st->cache);
    if (status != XNNCACHE_OK) {
      ET_LOG(
          Error,
          "xnncache: finalize failed: %s: %s; packed weights stay in memory",
          xnncache_status_name(status),
          xnncache_last_error());
    } else {
      struct xnncache_stats s {};
      if (xnncache_stats(st->cache, &s) == XNNCACHE_OK) {
        persisted = s.backing == XNNCACHE_BACKING_FILE;
        if (s.heap_fallback_bytes > st->reported_heap_bytes && !st->path.empty()) {
          // E.g. a full disk: the runtime is fine, the next process packs
          // these weights again.
          ET_LOG(
              Error,
              "xnncache: %" PRIu64 " packed bytes could not go to %s and stay on the heap",
              s.heap_fallback_bytes,
              st->path.c_str());
          st->reported_heap_bytes = s.heap_fallback_bytes;
        }
      }
    }
  }

  // The packed runtime no longer needs the unpacked constants. Tell
  // xnncache before their memory goes back to the allocator.
  for (FreeableBuffer& buffer : unpacked_data_) {
    if (st != nullptr && st->cache != nullptr) {
      xnncache_unregister_weights(st->cache, buffer.data(), buffer.size());
    }
    buffer.Free();
  }
  unpacked_data_.clear();
  unpacked_data_to_name_.clear();

  std::vector<std::string> packed_data_names;
  for (auto& entry : name_to_packed_data_metadata_) {
    if (entry.second.in_current_runtime) {
      entry.second.ref_count++;
      entry.second.in_current_runtime = false;
      if (persisted) {
        entry.second.from_load = true;
      }
      packed_data_names.push_back(entry.first);
    }
  }
  return packed_data_names;
}

Error XNNWeightsCache::delete_packed_data(
    const std::vector<std::string>& packed_data_names) {
  if (!is_finalized_) {
    ET_LOG(Error, "delete_packed_data called before finalize_for_runtime");
    return Error::InvalidArgument;
  }
  for (const std::string& name : packed_data_names) {
    auto entry = name_to_packed_data_metadata_.find(name);
    if (entry == name_to_packed_data_metadata_.end()) {
      ET_LOG(Error, "delete_packed_data: '%s' not found", name.c_str());
      return Error::InvalidArgument;
    }
    if (entry->second.ref_count > 0) {
      --entry->second.ref_count;
    }
    if (entry->second.ref_count > 0 || entry->second.from_load) {
      // Still used, or committed to the file: kept, as ExecuTorch's class
      // keeps entries its file holds.
      continue;
    }
    // The packed bytes themselves belong to xnncache and are released when
    // the cache closes (when the last runtime using this instance is gone).
    name_to_packed_data_metadata_.erase(entry);
  }
  return Error::Ok;
}

Error XNNWeightsCache::save_packed_index() {
  // xnncache commits at every finalize; this seals and commits whatever a
  // runtime packed since then, and waits until that is durable (an explicit
  // save). With nothing new it writes nothing.
  CacheState* st = state_of(this);
  if (st == nullptr || st->cache == nullptr) {
    return Error::Ok;
  }
  xnncache_status status = xnncache_finalize(st->cache);
  if (status == XNNCACHE_OK) {
    status = xnncache_wait(st->cache, UINT32_MAX);
  }
  if (status != XNNCACHE_OK) {
    ET_LOG(
        Error,
        "xnncache: save failed: %s: %s",
        xnncache_status_name(status),
        xnncache_last_error());
    return Error::Internal;
  }
  return Error::Ok;
}

// --- XNNPACK's provider callbacks: forwarded to xnncache's provider, with
// --- the names of what this runtime uses recorded for finalize_for_runtime.

namespace {

// The name ExecuTorch's class gives a packed weight: the weight's name
// followed by the bias's (when the bias is named too). Empty when XNNPACK
// names memory that was not loaded through load_unpacked_data.
std::string packed_name(
    const std::unordered_map<const void*, std::string>& names,
    const xnn_weights_cache_look_up_key* key) {
  auto weight = names.find(key->kernel);
  if (weight == names.end()) {
    return std::string();
  }
  std::string name = weight->second;
  if (key->bias != nullptr) {
    auto bias = names.find(key->bias);
    if (bias != names.end()) {
      name.append(bias->second);
    }
  }
  return name;
}

} // namespace

size_t XNNWeightsCache::look_up(
    XNNWeightsCache* context,
    const xnn_weights_cache_look_up_key* cache_key) {
  CacheState* st = state_of(context);
  if (st == nullptr || st->real == nullptr) {
    return SIZE_MAX;
  }
  size_t offset = st->real->look_up(st->real->context, cache_key);
  if (offset != SIZE_MAX) {
    std::string name = packed_name(context->unpacked_data_to_name_, cache_key);
    if (!name.empty()) {
      PackedDataMeta& meta = context->name_to_packed_data_metadata_[name];
      meta.offset = offset;
      meta.seed = cache_key->seed;
      meta.in_current_runtime = true;
    }
  }
  return offset;
}

void* XNNWeightsCache::reserve_space(XNNWeightsCache* context, size_t n) {
  CacheState* st = state_of(context);
  if (st == nullptr || st->real == nullptr) {
    return nullptr;
  }
  return st->real->reserve_space(st->real->context, n);
}

void* XNNWeightsCache::reserve_space_heap(size_t n) {
  // Not used: xnncache places every packed weight (and falls back to the
  // heap itself when its file cannot grow).
  return reserve_space(this, n);
}

size_t XNNWeightsCache::look_up_or_insert(
    XNNWeightsCache* context,
    const xnn_weights_cache_look_up_key* cache_key,
    void* ptr,
    size_t size) {
  CacheState* st = state_of(context);
  if (st == nullptr || st->real == nullptr) {
    return SIZE_MAX;
  }
  size_t offset =
      st->real->look_up_or_insert(st->real->context, cache_key, ptr, size);
  if (offset != SIZE_MAX) {
    std::string name = packed_name(context->unpacked_data_to_name_, cache_key);
    if (!name.empty()) {
      PackedDataMeta& meta = context->name_to_packed_data_metadata_[name];
      meta.offset = offset;
      if (size != 0) {
        meta.data_size = size;
      }
      meta.seed = cache_key->seed;
      meta.in_current_runtime = true;
    }
  }
  return offset;
}

bool XNNWeightsCache::is_finalized(XNNWeightsCache* context) {
  CacheState* st = state_of(context);
  if (st == nullptr || st->real == nullptr) {
    return context->is_finalized_;
  }
  return st->real->is_finalized(st->real->context);
}

void* XNNWeightsCache::offset_to_addr(XNNWeightsCache* context, size_t offset) {
  CacheState* st = state_of(context);
  if (st == nullptr || st->real == nullptr) {
    return nullptr;
  }
  return st->real->offset_to_addr(st->real->context, offset);
}

enum xnn_status XNNWeightsCache::delete_cache(XNNWeightsCache* context) {
  // The instance owns the xnncache handle and closes it in its destructor.
  (void)context;
  return xnn_status_success;
}

// Unused by this replacement (declared by the header for ExecuTorch's own
// file format); defined so that every declared member exists.
bool XNNWeightsCache::load_packed_cache() {
  return false;
}
void XNNWeightsCache::reset_for_fresh_write() {}
void XNNWeightsCache::release_entry(void* packed_data_ptr) {
  (void)packed_data_ptr;
}
void XNNWeightsCache::full_unload() {}

} // namespace delegate
} // namespace xnnpack
} // namespace backends
} // namespace executorch

// xnncache's statistics for the live ExecuTorch weights cache on `path`
// ("" for the one without a file), for tools and tests built against this
// replacement (declare it weak to run against ExecuTorch's own class too).
// Waits for the background write-back of the live cache on `path`
// (xnncache_wait). For hosts and tests that need the file durable now.
extern "C" int xnncache_executorch_wait(const char* path, uint32_t timeout_ms) {
  using executorch::backends::xnnpack::delegate::states;
  using executorch::backends::xnnpack::delegate::states_mutex;
  if (path == nullptr) {
    return XNNCACHE_INVALID_ARGUMENT;
  }
  xnncache* cache = nullptr;
  {
    std::lock_guard<std::mutex> lock(states_mutex());
    for (auto& entry : states()) {
      if (entry.second->cache != nullptr && entry.second->path == path) {
        cache = entry.second->cache;
      }
    }
  }
  return cache != nullptr ? xnncache_wait(cache, timeout_ms) : XNNCACHE_INVALID_STATE;
}

extern "C" int xnncache_executorch_stats(
    const char* path,
    struct xnncache_stats* out) {
  using executorch::backends::xnnpack::delegate::states;
  using executorch::backends::xnnpack::delegate::states_mutex;
  if (path == nullptr || out == nullptr) {
    return XNNCACHE_INVALID_ARGUMENT;
  }
  std::lock_guard<std::mutex> lock(states_mutex());
  for (auto& entry : states()) {
    const auto& st = *entry.second;
    if (st.cache != nullptr && st.path == path) {
      return xnncache_stats(st.cache, out);
    }
  }
  return XNNCACHE_INVALID_STATE;
}
