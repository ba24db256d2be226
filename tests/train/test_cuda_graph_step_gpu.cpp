// On the GPU machine, train.cuda_graph: the captured and replayed training step follows the
// eager trajectory (dense, ExFusion-mb through the expert kernels, MoE; bf16 autocast; a
// learning rate that changes every step; a batch of another shape after the capture), and a
// capture that fails is reported once (test_cuda_graph_step.cpp: a CPU run is refused).
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#include <gtest/gtest.h>
#include <torch/cuda.h>
#include <torch/types.h>

#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "../support/tiny_models.h"
#include "../support/trajectory.h"
#include "exfusion/data/loader.h"
#include "exfusion/layers/capabilities.h"
#include "exfusion/train/cuda_graph_step.h"
#include "exfusion/train/trainer.h"

namespace exfusion {
namespace {

// Replays run the kernels of the eager step on the same data; what may differ is the order
// of a few reductions (cuBLAS may choose another algorithm inside a capture), which bf16
// rounding magnifies.
constexpr double kFloat32Tolerance = 1e-5;
constexpr double kGraphStepBf16Tolerance = 1e-3;
// Three eager warm-up steps, the capture, then replays.
constexpr int kSteps = 8;
constexpr int64_t kBatch = 6;

#define REQUIRE_CUDA() \
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device: runs on the GPU machine"

RunConfig make_config(const std::string& kind, const std::string& precision, bool cuda_graph) {
  RunConfig config = default_run_config();
  testing::use_vit(config, testing::tiny_vit(kind, FusionVariant::kMemoryBank, 4));
  config.train.batch_size = kBatch;
  config.train.device = "cuda";
  config.train.precision = precision;
  config.train.clip_grad = 0.05;  // clips every step, so the device-side coefficient is used
  config.train.cuda_graph = cuda_graph;
  return config;
}

struct Trajectory {
  std::vector<double> losses;
  testing::NamedParams params;
  std::string routing;  // routing_json's text: the MoE statistics after the last step
};

// `odd_step`: the step (if any) that gets a batch of 4 images instead of kBatch.
Trajectory train(const std::string& kind, const std::string& precision, bool cuda_graph,
                 int odd_step = -1) {
  const auto config = make_config(kind, precision, cuda_graph);
  torch::manual_seed(7);
  auto model = build_model(config.model, config.ffn);
  Trainer trainer(config.train, model, make_task(config), torch::kCUDA);
  torch::manual_seed(8);
  Trajectory out;
  for (int i = 0; i < kSteps; ++i) {
    // A schedule: every replay must read the rate set just before it.
    trainer.set_lr(1e-2 / (1.0 + i));
    const int64_t batch = i == odd_step ? 4 : kBatch;
    const auto m = testing::vit_of(config);
    const Batch data{torch::randn({batch, m.in_chans, m.img_size, m.img_size}),
                     torch::randint(0, m.num_classes, {batch})};
    const auto [loss, metric_sums] = trainer.step(data);
    out.losses.push_back(loss.item<double>());
  }
  EXPECT_EQ(trainer.cuda_graph_captured(), cuda_graph);
  out.params = testing::trained_params(model);
  out.routing = collect_metrics(*model).value("routing", nlohmann::json::object()).dump();
  return out;
}

void expect_same(const Trajectory& graphed, const Trajectory& eager, double tolerance) {
  ASSERT_EQ(graphed.losses.size(), eager.losses.size());
  for (size_t i = 0; i < eager.losses.size(); ++i) {
    EXPECT_NEAR(graphed.losses[i], eager.losses[i], tolerance) << "step " << i;
  }
  EXPECT_LT(testing::max_param_diff(graphed.params, eager.params), tolerance);
  // The loss changed over the run, so the replays did train (not replay one frozen step).
  EXPECT_GT(std::abs(graphed.losses.back() - graphed.losses[kSteps / 2]), 1e-6);
}

// The device memory the caching allocator holds (in use or cached).
int64_t reserved_bytes() {
  const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(c10::cuda::current_device());
  return stats.reserved_bytes[static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE)]
      .current;
}

// A step that reads a value back to the host cannot be captured. The error says so, the
// capture's memory pool is given back, later calls refuse without capturing again, and
// another step captures and replays after it.
TEST(CudaGraphStep, AFailedCaptureIsReportedOnceAndGivesItsMemoryBack) {
  REQUIRE_CUDA();
  torch::manual_seed(9);
  const Batch batch{torch::randn({4, 8}, torch::kCUDA),
                    torch::zeros({4}, torch::dtype(torch::kLong).device(torch::kCUDA))};
  const auto& images = batch.inputs;
  int calls = 0;
  CudaGraphStep syncing(
      [&](const Batch& step_batch) {
        ++calls;
        const auto loss = step_batch.inputs.square().mean();
        const double value = loss.item<double>();  // waits for the device
        return std::make_pair(loss * value, step_batch.targets.sum());
      },
      /*warmup_steps=*/1);
  syncing.run(batch);
  c10::cuda::device_synchronize();
  c10::cuda::CUDACachingAllocator::emptyCache();
  const auto reserved = reserved_bytes();
  try {
    syncing.run(batch);
    FAIL() << "expected the capture to fail";
  } catch (const std::runtime_error& error) {
    const std::string message = error.what();
    EXPECT_NE(message.find("capturing the training step failed"), std::string::npos) << message;
    EXPECT_NE(message.find("train.cuda_graph=false"), std::string::npos) << message;
  }
  EXPECT_FALSE(syncing.captured());
  EXPECT_EQ(calls, 2);
  // Nothing allocated in the capture outlived it, so with the pool released and the cache
  // emptied, the device holds what it held before.
  c10::cuda::CUDACachingAllocator::emptyCache();
  EXPECT_EQ(reserved_bytes(), reserved);
  EXPECT_THROW(syncing.run(batch), std::runtime_error);
  EXPECT_EQ(calls, 2) << "the step was captured again";

  auto total = torch::ones({8}, torch::kCUDA);
  CudaGraphStep adding(
      [&](const Batch& step_batch) {
        total.add_(step_batch.inputs.sum(0));
        return std::make_pair(total.sum(), step_batch.targets.sum());
      },
      /*warmup_steps=*/1);
  for (int i = 0; i < 3; ++i) adding.run(batch);
  EXPECT_TRUE(adding.captured());
  // The warm-up, the capture's replay and one more replay each add the batch once.
  EXPECT_TRUE(torch::allclose(total, 1 + 3 * images.sum(0), 1e-6, 1e-5));
}

TEST(CudaGraphTraining, DenseFollowsTheEagerTrajectory) {
  REQUIRE_CUDA();
  expect_same(train("dense", "fp32", true), train("dense", "fp32", false), kFloat32Tolerance);
}

TEST(CudaGraphTraining, MemoryBankFollowsTheEagerTrajectory) {
  REQUIRE_CUDA();
  expect_same(train("exfusion", "fp32", true), train("exfusion", "fp32", false), kFloat32Tolerance);
}

TEST(CudaGraphTraining, MemoryBankFollowsTheEagerTrajectoryUnderBf16) {
  REQUIRE_CUDA();
  expect_same(train("exfusion", "bf16", true), train("exfusion", "bf16", false),
              kGraphStepBf16Tolerance);
}

TEST(CudaGraphTraining, MoeFollowsTheEagerTrajectoryAndReportsTheReplayedRouting) {
  REQUIRE_CUDA();
  const auto graphed = train("moe", "fp32", true);
  const auto eager = train("moe", "fp32", false);
  expect_same(graphed, eager, kFloat32Tolerance);
  const auto graphed_routing = nlohmann::json::parse(graphed.routing);
  const auto eager_routing = nlohmann::json::parse(eager.routing);
  ASSERT_FALSE(eager_routing.empty());
  for (const auto& [block, stats] : eager_routing.items()) {
    EXPECT_NEAR(graphed_routing[block]["aux_loss"].get<double>(), stats["aux_loss"].get<double>(),
                kFloat32Tolerance);
    EXPECT_NEAR(graphed_routing[block]["dropped_fraction"].get<double>(),
                stats["dropped_fraction"].get<double>(), kFloat32Tolerance);
  }
}

TEST(CudaGraphTraining, ABatchOfAnotherShapeRunsEagerlyBetweenReplays) {
  REQUIRE_CUDA();
  constexpr int kOddStep = 5;  // after the capture at step 3
  expect_same(train("exfusion", "fp32", true, kOddStep), train("exfusion", "fp32", false, kOddStep),
              kFloat32Tolerance);
}

// The first batch fixes the captured shape: an odd batch where the capture would come runs
// eagerly, and the next full batch is captured instead of being run eagerly for good.
TEST(CudaGraphTraining, AnOddBatchAtTheCaptureStepIsNotCaptured) {
  REQUIRE_CUDA();
  constexpr int kOddStep = 3;
  expect_same(train("exfusion", "fp32", true, kOddStep), train("exfusion", "fp32", false, kOddStep),
              kFloat32Tolerance);
}

}  // namespace
}  // namespace exfusion
