// Tests of xnncache's XNNWeightsCache.cpp that take the place of the
// ExecuTorch tests of the class which read ExecuTorch's own cache file
// format (scripts/test-executorch.sh runs all the others unmodified):
//
//   SavePackedIndex_EntryFormatIncludesSeed           -> FileIsXnncacheFormatAndVerifies
//   LoadPackedCache_CorruptedSeed_ProducesCorrectOutput -> CorruptHeaderIsRebuiltWithCorrectOutput,
//                                                        CorruptPayloadIsCaughtWithVerify
//
// and what ExecuTorch's tests cannot see: xnncache's own figures (a warm
// instance packs nothing; the names it reports at initialize are a real
// program's named-data keys) and a folder where no file can be.
//
// They use the first layer of the fc_stack program (shared/executorch):
// its weights and bias come from the program's named data, exactly as the
// XNNPACK backend loads them.

#include <executorch/backends/xnnpack/runtime/XNNWeightsCache.h>
#include <executorch/extension/data_loader/file_data_loader.h>
#include <executorch/runtime/executor/program.h>
#include <executorch/runtime/platform/runtime.h>

#include <xnncache.h>
#include <xnnpack.h>

#include <gtest/gtest.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <vector>

extern "C" int xnncache_executorch_stats(const char* path, struct xnncache_stats* out);

#ifndef XNNCACHE_ET_PROGRAMS
#define XNNCACHE_ET_PROGRAMS "../shared/executorch"
#endif

using executorch::backends::xnnpack::delegate::XNNWeightsCache;
using executorch::extension::FileDataLoader;
using executorch::runtime::Error;
using executorch::runtime::MemoryAllocator;
using executorch::runtime::NamedDataMap;
using executorch::runtime::Program;

namespace {

// fc_stack's first layer: fp32 [1024 x 256] weights and a [1024] bias.
const char kWeight[] = "41e792bb3c0a9b8c9aeb6bc92b64c8c57ba6b2fe8734b35f1c0bb14855fc8bd7";
const char kBias[] = "082a163fb65de93c3746c7e5dfbdde52ce33269c44507cc3c226370973e0c140";
constexpr size_t kBatch = 4, kIn = 256, kOut = 1024;

struct xnncache_stats stats_of(const std::string& path) {
  struct xnncache_stats s {};
  EXPECT_EQ(xnncache_executorch_stats(path.c_str(), &s), XNNCACHE_OK) << path;
  return s;
}

off_t file_size(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 ? st.st_size : -1;
}

class XnncacheEquivalents : public ::testing::Test {
 protected:
  void SetUp() override {
    executorch::runtime::runtime_init();
    ASSERT_EQ(xnn_initialize(nullptr), xnn_status_success);
    std::string pte = std::string(XNNCACHE_ET_PROGRAMS) + "/fc_stack.pte";
    auto loader = FileDataLoader::from(pte.c_str());
    ASSERT_EQ(loader.error(), Error::Ok) << pte;
    loader_ = std::make_unique<FileDataLoader>(std::move(loader.get()));
    auto program = Program::load(loader_.get());
    ASSERT_EQ(program.error(), Error::Ok);
    program_.emplace(std::move(program.get()));
    auto map = program_->get_named_data_map();
    ASSERT_EQ(map.error(), Error::Ok);
    named_data_ = map.get();
    allocator_ = std::make_unique<MemoryAllocator>(sizeof(arena_), arena_);
    input_.resize(kBatch * kIn);
    for (size_t i = 0; i < input_.size(); ++i) {
      input_[i] = static_cast<float>((i * 37) % 101) / 50.0f - 1.0f;
    }
    path_ = std::string("/tmp/xnncache_et_equiv_") + std::to_string(::getpid()) + "_" +
        ::testing::UnitTest::GetInstance()->current_test_info()->name() + ".xnncache";
    ::unlink(path_.c_str());
  }

  void TearDown() override {
    ::unlink(path_.c_str());
  }

  // Builds one fully connected runtime through the class as XNNCompiler
  // does (initialize, load_unpacked_data, create with get(), finalize),
  // runs it, and returns the output. `names` gets finalize's names.
  std::vector<float> run(XNNWeightsCache& cache, std::vector<std::string>* names = nullptr) {
    std::vector<float> output(kBatch * kOut, 0.0f);
    EXPECT_EQ(cache.initialize_for_runtime(allocator_.get(), named_data_), Error::Ok);
    xnn_subgraph_t subgraph = nullptr;
    EXPECT_EQ(xnn_create_subgraph(2, 0, &subgraph), xnn_status_success);
    uint32_t x = 0, w = 0, b = 0, y = 0;
    const size_t x_dims[] = {kBatch, kIn}, w_dims[] = {kOut, kIn}, b_dims[] = {kOut}, y_dims[] = {kBatch, kOut};
    auto weight = cache.load_unpacked_data(kWeight);
    auto bias = cache.load_unpacked_data(kBias);
    EXPECT_TRUE(weight.ok() && bias.ok());
    EXPECT_EQ(xnn_define_tensor_value(subgraph, xnn_datatype_fp32, 2, x_dims, nullptr, 0, XNN_VALUE_FLAG_EXTERNAL_INPUT, &x), xnn_status_success);
    EXPECT_EQ(xnn_define_tensor_value(subgraph, xnn_datatype_fp32, 2, w_dims, weight.get(), XNN_INVALID_VALUE_ID, 0, &w), xnn_status_success);
    EXPECT_EQ(xnn_define_tensor_value(subgraph, xnn_datatype_fp32, 1, b_dims, bias.get(), XNN_INVALID_VALUE_ID, 0, &b), xnn_status_success);
    EXPECT_EQ(xnn_define_tensor_value(subgraph, xnn_datatype_fp32, 2, y_dims, nullptr, 1, XNN_VALUE_FLAG_EXTERNAL_OUTPUT, &y), xnn_status_success);
    EXPECT_EQ(xnn_define_fully_connected(subgraph, -std::numeric_limits<float>::infinity(),
                                         std::numeric_limits<float>::infinity(), x, w, b, y, 0),
              xnn_status_success);
    xnn_runtime_t runtime = nullptr;
    EXPECT_EQ(xnn_create_runtime_v4(subgraph, cache.get(), nullptr, nullptr, 0, &runtime), xnn_status_success);
    auto finalized = cache.finalize_for_runtime();
    EXPECT_TRUE(finalized.ok());
    if (names != nullptr && finalized.ok()) {
      *names = finalized.get();
    }
    EXPECT_EQ(cache.get_num_unpacked_data(), 0u);
    xnn_external_value io[] = {{x, input_.data()}, {y, output.data()}};
    EXPECT_EQ(xnn_reshape_runtime(runtime), xnn_status_success);
    EXPECT_EQ(xnn_setup_runtime_v2(runtime, 2, io), xnn_status_success);
    EXPECT_EQ(xnn_invoke_runtime(runtime), xnn_status_success);
    xnn_delete_runtime(runtime);
    xnn_delete_subgraph(subgraph);
    return output;
  }

  std::vector<float> baseline() {
    XNNWeightsCache cache;  // no path: xnncache in anonymous memory
    return run(cache);
  }

  // A committed cache file at path_; returns its output.
  std::vector<float> seed() {
    XNNWeightsCache cache;
    cache.set_packed_cache_path(path_);
    std::vector<float> out = run(cache);
    EXPECT_EQ(cache.save_packed_index(), Error::Ok);
    struct xnncache_stats s = stats_of(path_);
    EXPECT_GT(s.packed_bytes, 0u);
    EXPECT_EQ(s.backing, (uint32_t)XNNCACHE_BACKING_FILE);
    EXPECT_GE(s.commits, 1u);
    return out;
  }

  void overwrite(off_t offset, size_t n, unsigned char byte) {
    int fd = ::open(path_.c_str(), O_WRONLY);
    ASSERT_GE(fd, 0);
    std::vector<unsigned char> junk(n, byte);
    ASSERT_EQ(::pwrite(fd, junk.data(), n, offset), (ssize_t)n);
    ::close(fd);
  }

  std::unique_ptr<FileDataLoader> loader_;
  std::optional<Program> program_;
  const NamedDataMap* named_data_ = nullptr;
  alignas(16) uint8_t arena_[256];
  std::unique_ptr<MemoryAllocator> allocator_;
  std::vector<float> input_;
  std::string path_;
};

TEST_F(XnncacheEquivalents, WarmInstanceNamesWhatItHoldsPacksNothingAndFileDoesNotGrow) {
  const std::vector<float> expected = baseline();
  EXPECT_EQ(seed(), expected);
  const off_t size = file_size(path_);
  ASSERT_GT(size, 0);
  {
    // The names come from the file's index at initialize, before anything
    // is looked up: the program's named-data keys, weights then bias.
    XNNWeightsCache cache;
    cache.set_packed_cache_path(path_);
    ASSERT_EQ(cache.initialize_for_runtime(allocator_.get(), named_data_), Error::Ok);
    const std::vector<std::string> at_initialize = cache.get_packed_data_names();
    ASSERT_EQ(at_initialize.size(), 1u);
    EXPECT_EQ(at_initialize[0], std::string(kWeight) + kBias);
    EXPECT_EQ(stats_of(path_).found_bytes, 0u);
  }
  {
    XNNWeightsCache cache;
    cache.set_packed_cache_path(path_);
    std::vector<std::string> names;
    EXPECT_EQ(run(cache, &names), expected);
    struct xnncache_stats s = stats_of(path_);
    EXPECT_EQ(s.file_state, (uint32_t)XNNCACHE_FILE_REUSED);
    EXPECT_GT(s.loaded_entries, 0u);
    EXPECT_EQ(s.packed_bytes, 0u);
    EXPECT_GT(s.found_bytes, 0u);
    ASSERT_EQ(names.size(), 1u);
    EXPECT_EQ(names[0], std::string(kWeight) + kBias);
    EXPECT_EQ(cache.save_packed_index(), Error::Ok);
  }
  EXPECT_EQ(file_size(path_), size);
  {
    // A runtime destroyed and created again in the same instance.
    XNNWeightsCache cache;
    cache.set_packed_cache_path(path_);
    std::vector<std::string> names;
    EXPECT_EQ(run(cache, &names), expected);
    EXPECT_EQ(cache.delete_packed_data(names), Error::Ok);
    EXPECT_EQ(run(cache), expected);
    EXPECT_EQ(stats_of(path_).packed_bytes, 0u);
    EXPECT_EQ(cache.save_packed_index(), Error::Ok);
  }
  EXPECT_EQ(file_size(path_), size);
}

TEST_F(XnncacheEquivalents, FileIsXnncacheFormatAndVerifies) {
  seed();
  xnncache_options options = XNNCACHE_OPTIONS_INIT;
  options.path = path_.c_str();
  options.flags = XNNCACHE_FLAG_READ_ONLY | XNNCACHE_FLAG_VERIFY;
  xnncache* cache = nullptr;
  ASSERT_EQ(xnncache_open(&options, &cache), XNNCACHE_OK);
  struct xnncache_stats s {};
  ASSERT_EQ(xnncache_stats(cache, &s), XNNCACHE_OK);
  EXPECT_EQ(s.file_state, (uint32_t)XNNCACHE_FILE_REUSED);
  EXPECT_GE(s.loaded_entries, 1u);
  EXPECT_EQ(xnncache_verify(cache), XNNCACHE_OK);
  xnncache_close(cache);
}

TEST_F(XnncacheEquivalents, CorruptHeaderIsRebuiltWithCorrectOutput) {
  const std::vector<float> expected = baseline();
  seed();
  overwrite(0, 4096, 0xCC);  // both header slots
  {
    XNNWeightsCache cache;
    cache.set_packed_cache_path(path_);
    EXPECT_EQ(run(cache), expected);
    struct xnncache_stats s = stats_of(path_);
    EXPECT_EQ(s.file_state, (uint32_t)XNNCACHE_FILE_REBUILT_CORRUPT);
    EXPECT_GT(s.packed_bytes, 0u);
  }
  XNNWeightsCache cache;
  cache.set_packed_cache_path(path_);
  EXPECT_EQ(run(cache), expected);
  EXPECT_EQ(stats_of(path_).file_state, (uint32_t)XNNCACHE_FILE_REUSED);
  EXPECT_EQ(stats_of(path_).packed_bytes, 0u);
}

TEST_F(XnncacheEquivalents, CorruptPayloadIsCaughtWithVerify) {
  const std::vector<float> expected = baseline();
  seed();
  // Payloads start 64 KiB into the file (docs/FORMAT.md): inside the first packed weight.
  overwrite((64 << 10) + 128, 64, 0x5A);
  ::setenv("XNNCACHE_ET_VERIFY", "1", 1);
  XNNWeightsCache cache;
  cache.set_packed_cache_path(path_);
  std::vector<float> out = run(cache);
  ::unsetenv("XNNCACHE_ET_VERIFY");
  EXPECT_EQ(out, expected);
  EXPECT_EQ(stats_of(path_).file_state, (uint32_t)XNNCACHE_FILE_REBUILT_CORRUPT);
}

TEST_F(XnncacheEquivalents, UnusableFolderStillRuns) {
  // finalize_for_runtime must succeed when nothing can be persisted.
  const std::vector<float> expected = baseline();
  XNNWeightsCache cache;
  const std::string path = "/proc/xnncache-cannot-be-here/cache.xnncache";
  cache.set_packed_cache_path(path);
  std::vector<std::string> names;
  EXPECT_EQ(run(cache, &names), expected);
  EXPECT_EQ(names.size(), 1u);
  EXPECT_NE(stats_of(path).backing, (uint32_t)XNNCACHE_BACKING_FILE);
}

}  // namespace
