// Training with the expert-bank kernels and the factored AdamW step (train.expert_kernels)
// follows the same trajectory as plain autograd with materialised expert gradients: on the
// CPU through the references, on a GPU through the CUDA kernels.
#include <gtest/gtest.h>
#include <torch/cuda.h>
#include <torch/types.h>

#include <memory>
#include <string>
#include <vector>

#include "../support/tiny_models.h"
#include "../support/trajectory.h"
#include "exfusion/data/loader.h"
#include "exfusion/fusion/expert_bank.h"
#include "exfusion/train/trainer.h"

namespace exfusion {
namespace {

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
  EXPECT_LT(testing::max_param_diff(with_kernels, without), testing::kTrajectoryTolerance);
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

// A model outlives its trainer. A later trainer without the kernels must get the banks'
// weight gradients itself rather than leave them in the earlier trainer's sink.
TEST(FactoredTraining, ALaterTrainerWithoutTheKernelsStepsTheBanks) {
  const auto with_kernels = make_config(true, "cpu");
  torch::manual_seed(7);
  VisionTransformer model(with_kernels.model);
  std::vector<ExpertBank> banks;
  for (const auto& module : model->modules(/*include_self=*/false)) {
    if (auto bank = std::dynamic_pointer_cast<ExpertBankImpl>(module)) banks.emplace_back(bank);
  }
  ASSERT_FALSE(banks.empty());
  const auto& m = with_kernels.model;
  const auto batch = [&] {
    return Batch{torch::randn({6, m.in_chans, m.img_size, m.img_size}),
                 torch::randint(0, m.num_classes, {6})};
  };
  {
    Trainer first(with_kernels, model, torch::kCPU);
    for (const auto& bank : banks) EXPECT_NE(bank->weight_grad_sink, nullptr);
    first.step(batch());
  }
  for (const auto& bank : banks) EXPECT_EQ(bank->weight_grad_sink, nullptr);
  Trainer second(make_config(false, "cpu"), model, torch::kCPU);
  second.set_lr(1e-2);
  std::vector<torch::Tensor> before;
  before.reserve(banks.size());
  for (const auto& bank : banks) before.push_back(bank->weight.detach().clone());
  second.step(batch());
  for (size_t i = 0; i < banks.size(); ++i) {
    EXPECT_GT((banks[i]->weight.detach() - before[i]).abs().max().item<double>(), 1e-4)
        << "bank " << i << " was not stepped";
  }
}

TEST(FactoredTraining, MatchesMaterialisedGradientsOnCuda) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device: runs on the GPU machine";
  expect_same_trajectory("cuda");
}

}  // namespace
}  // namespace exfusion
