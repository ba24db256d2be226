// Training with the expert-bank kernels and the factored AdamW step (train.expert_kernels)
// follows the same trajectory as plain autograd with materialised expert gradients: on the
// CPU through the references, on a GPU through the CUDA kernels.
#include <gtest/gtest.h>
#include <torch/cuda.h>
#include <torch/types.h>

#include <string>

#include "../support/tiny_models.h"
#include "../support/trajectory.h"
#include "exfusion/data/loader.h"
#include "exfusion/train/trainer.h"

namespace exfusion {
namespace {

// float32 updates of the same gradients, summed in a different order (GEMV vs kernel,
// AdamW arithmetic in another order), over a few steps.
constexpr double kTolerance = 2e-5;
constexpr int kSteps = 4;

RunConfig make_config(bool expert_kernels, const std::string& device) {
  auto config = testing::tiny_training_config(device);
  // Small enough that clipping scales every step, so the factored norm is exercised.
  config.train.clip_grad = 0.05;
  config.train.expert_kernels = expert_kernels;
  return config;
}

void expect_same_trajectory(const std::string& device) {
  const auto with_kernels = testing::train_tiny_vit(make_config(true, device), kSteps);
  const auto without = testing::train_tiny_vit(make_config(false, device), kSteps);
  EXPECT_LT(testing::max_param_diff(with_kernels, without), kTolerance);
  // And training moved the parameters, so the comparison is not of two untouched models.
  torch::manual_seed(7);
  VisionTransformer initial(make_config(true, device).model);
  double moved = 0;
  const auto start = initial->parameters();
  for (size_t i = 0; i < start.size(); ++i) {
    moved = std::max(moved, (with_kernels[i].second - start[i]).abs().max().item<double>());
  }
  EXPECT_GT(moved, 1e-3);
}

TEST(FactoredTraining, MatchesMaterialisedGradientsOnCpu) { expect_same_trajectory("cpu"); }

TEST(FactoredTraining, MatchesMaterialisedGradientsOnCuda) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device: runs on the GPU machine";
  expect_same_trajectory("cuda");
}

}  // namespace
}  // namespace exfusion
