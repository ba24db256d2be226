// The comparison the factored-training tests run on the CPU and on the GPU machine: a short
// training with the expert-bank kernels and the factored AdamW step (train.expert_kernels)
// against plain autograd with materialised expert gradients.
#pragma once
#include <gtest/gtest.h>
#include <torch/types.h>

#include <algorithm>
#include <string>

#include "exfusion/train/run_config.h"
#include "trajectory.h"

namespace exfusion::testing {

constexpr int kFactoredSteps = 4;

inline RunConfig factored_training_config(bool expert_kernels, const std::string& device) {
  auto config = tiny_training_config(device);
  // Small enough that clipping scales every step, so the factored norm is exercised.
  config.train.clip_grad = 0.05;
  config.train.expert_kernels = expert_kernels;
  return config;
}

inline void expect_same_factored_trajectory(const std::string& device) {
  const auto with_kernels = train_tiny_vit(factored_training_config(true, device), kFactoredSteps);
  const auto without = train_tiny_vit(factored_training_config(false, device), kFactoredSteps);
  EXPECT_LT(max_param_diff(with_kernels, without), kTrajectoryTolerance);
  // And training moved the parameters, so the comparison is not of two untouched models.
  torch::manual_seed(7);
  const auto initial_config = factored_training_config(true, device);
  auto initial = build_model(initial_config.model, initial_config.ffn);
  double moved = 0;
  const auto start = initial->parameters();
  for (size_t i = 0; i < start.size(); ++i) {
    moved = std::max(moved, (with_kernels[i].second - start[i]).abs().max().item<double>());
  }
  EXPECT_GT(moved, 1e-3);
}

}  // namespace exfusion::testing
