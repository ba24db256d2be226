// SerialTorchOpsGuard: a thread holding one runs LibTorch's CPU operators alone while other
// threads keep their count, and the loaders' threads start no OpenMP team of their own (counted
// as the process's threads: a loader thread's team would add threads beside it).
#include <gtest/gtest.h>

#include <ATen/Parallel.h>

#include <filesystem>
#include <thread>

#include "exfusion/data/image_loader.h"
#include "exfusion/data/loader.h"
#include "exfusion/util/serial_torch_ops.h"

namespace exfusion {
namespace {

int64_t process_threads() {
  int64_t count = 0;
  for ([[maybe_unused]] const auto& entry :
       std::filesystem::directory_iterator("/proc/self/task")) {
    ++count;
  }
  return count;
}

// Two intra-op threads for the test (whatever the machine's cores), and the training thread's
// OpenMP team started by one parallel operator, so that only new teams change the count.
class TwoIntraOpThreads : public ::testing::Test {
 protected:
  void SetUp() override {
    previous_ = at::get_num_threads();
    at::set_num_threads(2);
    (void)torch::ones({1 << 20}).add(1);
  }
  void TearDown() override { at::set_num_threads(previous_); }

 private:
  int previous_ = 1;
};

// uint8 images large enough that converting one batch is a parallel operator (over LibTorch's
// grain of 32 768 elements): 128 × 1 × 32 × 32 = 131 072.
ImageDataset large_images(int64_t n, int64_t channels) {
  return {torch::randint(0, 256, {n, channels, 32, 32}).to(torch::kUInt8),
          torch::arange(n).remainder(10)};
}

TEST_F(TwoIntraOpThreads, AGuardedThreadRunsAloneAndOthersKeepTheirCount) {
  int inside = 0, after = 0, other_while_guarded = 0;
  std::thread guarded([&] {
    {
      const SerialTorchOpsGuard serial;
      inside = at::get_num_threads();
      std::thread other([&] { other_while_guarded = at::get_num_threads(); });
      other.join();
    }
    after = at::get_num_threads();
  });
  guarded.join();
  EXPECT_EQ(inside, 1);
  EXPECT_EQ(other_while_guarded, 2);
  EXPECT_EQ(after, 2);
  EXPECT_EQ(at::get_num_threads(), 2);
}

TEST_F(TwoIntraOpThreads, TheBatchLoaderThreadStartsNoOpenMpTeam) {
  LoaderOptions options;
  options.prefetch = 1;
  const auto before = process_threads();
  {
    BatchLoader loader(large_images(4 * 128, 1), options);
    loader.start_epoch(0);
    // Batch 0 is assembled (a team would exist by now), and the worker stays alive, blocked
    // behind the full queue with batches 2 and 3 still to come.
    ASSERT_TRUE(loader.next().has_value());
    EXPECT_EQ(process_threads(), before + 1) << "the loader's worker and nothing more";
  }
  EXPECT_EQ(at::get_num_threads(), 2);
}

TEST_F(TwoIntraOpThreads, ImageLoaderWorkersStartNoOpenMpTeam) {
  ImageLoaderOptions options;
  options.workers = 2;
  options.prefetch = 1;
  options.pipeline.size = 32;
  options.pipeline.channels = 3;
  options.pipeline.mean = {0, 0, 0};
  options.pipeline.std = {1, 1, 1};
  // Soft targets of 128 × 300 classes: copying them out is a parallel operator.
  options.mixing.mixup_alpha = 0.8;
  options.classes = 300;
  const auto source = std::make_shared<TensorImageSource>(large_images(8 * 128, 3));
  const auto before = process_threads();
  {
    ImageLoader loader(source, options);
    loader.start_epoch(0);
    ASSERT_TRUE(loader.next().has_value());
    EXPECT_EQ(process_threads(), before + 2) << "the two workers and nothing more";
  }
}

}  // namespace
}  // namespace exfusion
