// On the GPU machine: each fast path counts a call it does not cover as a fallback, backward
// passes count into their forward's scope, evaluation follows its scope's policy, and bf16
// training steps of DeiT-Ti and ViT-B blocks take every path, once per call, without one.
#include <gtest/gtest.h>
#include <torch/types.h>

#include <string>
#include <utility>

#include "../support/cuda.h"
#include "../support/tiny_models.h"
#include "exfusion/data/loader.h"
#include "exfusion/fusion/expert_kernels.h"
#include "exfusion/fusion/expert_mix.h"
#include "exfusion/layers/layer_norm.h"
#include "exfusion/layers/linear.h"
#include "exfusion/tasks/image_classification.h"
#include "exfusion/train/run_config.h"
#include "exfusion/util/fast_paths.h"
#include "exfusion/workflows/step_benchmark.h"

namespace exfusion {
namespace {

// A CUDA call each path does not cover: LayerNorm wider than the kernels' rows, a float64
// linear layer, a float64 expert mix.
TEST(FastPathCallsCuda, CallsThePathsDoNotCoverAreFallbacks) {
  REQUIRE_CUDA_KERNELS();
  const auto options = torch::TensorOptions().device(torch::kCUDA);
  const FastPathScope scope(FastPathPolicy{});
  const auto& counters = *scope.counters();

  torch::nn::LayerNorm wide(torch::nn::LayerNormOptions({2048}));
  wide->to(torch::kCUDA);
  layer_norm(torch::randn({4, 2048}, options), wide);
  torch::nn::LayerNorm covered(torch::nn::LayerNormOptions({768}));
  covered->to(torch::kCUDA);
  layer_norm(torch::randn({4, 768}, options), covered);
  EXPECT_EQ(counters.calls(FastPath::kLayerNormKernels).fell_back, 1);
  EXPECT_EQ(counters.calls(FastPath::kLayerNormKernels).taken, 1);

  const auto f64 = options.dtype(torch::kFloat64);
  const auto weight = torch::randn({8, 16}, f64.requires_grad(true));
  const auto bias = torch::randn({8}, f64.requires_grad(true));
  linear(torch::randn({4, 16}, f64), weight, bias).sum().backward();
  EXPECT_EQ(counters.calls(FastPath::kBiasGradEpilogue).fell_back, 1);
  EXPECT_EQ(counters.calls(FastPath::kBiasGradEpilogue).taken, 0);

  const auto experts = torch::randn({4, 8, 16}, options);
  mix_experts(experts, torch::rand({4}, options), torch::kFloat64);
  EXPECT_EQ(counters.calls(FastPath::kExpertKernels).fell_back, 1);
  EXPECT_EQ(counters.calls(FastPath::kExpertKernels).taken, 0);
}

// A backward pass runs on autograd's device thread: the expert mix's coefficient gradient and
// the linear node's weight gradient count into the forward's scope and follow its policy.
TEST(FastPathCallsCuda, BackwardPassesCountIntoTheForwardsScope) {
  REQUIRE_CUDA_KERNELS();
  const auto options = torch::TensorOptions().device(torch::kCUDA);
  const auto experts = torch::randn({4, 8, 16}, options.requires_grad(true));
  const auto coeffs = torch::rand({4}, options.requires_grad(true));
  const auto weight = torch::randn({8, 16}, options.requires_grad(true));
  const auto bias = torch::randn({8}, options.requires_grad(true));
  const auto x = torch::randn({4, 16}, options);
  {
    const FastPathScope scope(FastPathPolicy{});
    expert_mix(experts, coeffs, torch::kFloat32).sum().backward();
    linear(x, weight, bias).sum().backward();
    // The mix in the forward, its coefficient gradient in the backward.
    EXPECT_EQ(scope.counters()->calls(FastPath::kExpertKernels).taken, 2);
    EXPECT_EQ(scope.counters()->calls(FastPath::kBiasGradEpilogue).taken, 1);
  }
  FastPathPolicy off;
  off.expert_kernels = false;
  const FastPathScope scope(off);
  const auto mixed = expert_mix(experts, coeffs, torch::kFloat32);
  coeffs.mutable_grad().reset();
  mixed.backward(torch::ones_like(mixed));
  EXPECT_EQ(scope.counters()->calls(FastPath::kExpertKernels).taken, 0);
  EXPECT_EQ(scope.counters()->calls(FastPath::kExpertKernels).fell_back, 0);
  // The reference's coefficient gradient: <E_i, 1>.
  EXPECT_TRUE(torch::allclose(coeffs.grad(), experts.detach().sum({1, 2}), 1e-4, 1e-4));
}

// Evaluation follows the policy of the scope it runs in: `exfusion eval` of a run trained with
// train.layer_norm_kernels=false evaluates without the LayerNorm kernels.
TEST(FastPathCallsCuda, EvaluationTakesOnlyThePathsItsScopeAllows) {
  REQUIRE_CUDA_KERNELS();
  const auto options = testing::tiny_vit();
  torch::manual_seed(3);
  VisionTransformer model(options);
  model->to(torch::kCUDA);
  ImageDataset data{
      torch::randint(0, 256, {8, options.in_chans, options.img_size, options.img_size},
                     torch::kUInt8),
      torch::randint(0, options.num_classes, {8})};
  LoaderOptions loader_options;
  loader_options.batch_size = 4;
  loader_options.shuffle = false;
  loader_options.mean.assign(options.in_chans, 0.5f);
  loader_options.std.assign(options.in_chans, 0.25f);
  BatchLoader loader(std::move(data), loader_options);
  const auto layer_norm_calls = [&](const TrainConfig& train) {
    const FastPathScope scope(fast_path_policy(train));
    ImageClassificationTask(TaskOptions{})
        .evaluate(*model, loader, torch::kCUDA, /*bf16=*/true,
                  /*keep_outputs=*/false);
    return scope.counters()->calls(FastPath::kLayerNormKernels);
  };
  TrainConfig train;
  // Two batches, each through 2 norms per block and the final one.
  EXPECT_EQ(layer_norm_calls(train).taken, 2 * (2 * options.depth + 1));
  train.layer_norm_kernels = false;
  EXPECT_EQ(layer_norm_calls(train).taken, 0);
  EXPECT_EQ(layer_norm_calls(train).fell_back, 0);
}

// What `exfusion bench` reports for DeiT-Ti and ViT-B blocks (at batch 4, not the compared
// batches), dense and ExFusion-mb: every call on its fast path, counted once. Per step and block:
// 2 LayerNorms; 4 linear layers with a bias (qkv, proj, fc1, fc2: ExFusion's fused ones too);
// for ExFusion 2 banks (fc1, fc2) of 5 expert primitives each: the weight's and the bias's mix
// and coefficient gradient, and the weight's factored AdamW step. Plus the final LayerNorm and
// the head. ExFusion-mb's router is a Linear with a bias too: one more per block.
void expect_every_path_taken(const std::string& preset, const std::string& ffn) {
  RunConfig config = default_run_config();
  auto vit = vit_preset(preset);
  vit.ffn = testing::ffn_of(ffn, FusionVariant::kMemoryBank, 4);
  testing::use_vit(config, vit);
  config.train.device = "cuda";
  config.train.batch_size = 4;
  BenchmarkOptions options;
  options.warmup_steps = 1;
  options.timed_steps = 1;
  const auto result = benchmark_training_step(config, options);
  ASSERT_EQ(result["precision"], "bf16");
  const int64_t steps = options.warmup_steps + options.timed_steps;
  const int64_t depth = vit.depth;
  const auto expected_taken = [&](FastPath path) -> int64_t {
    switch (path) {
      case FastPath::kLayerNormKernels:
        return (2 * depth + 1) * steps;
      case FastPath::kBiasGradEpilogue:
        return (4 * depth + 1 + (ffn == "exfusion" ? depth : 0)) * steps;
      case FastPath::kExpertKernels:
        return ffn == "exfusion" ? 10 * depth * steps : 0;
    }
    return -1;
  };
  for (const auto path : kFastPaths) {
    const auto& calls = result["fast_path_calls"][to_string(path)];
    const auto where = preset + " " + ffn + " " + to_string(path);
    EXPECT_EQ(calls["taken"].get<int64_t>(), expected_taken(path)) << where;
    EXPECT_EQ(calls["fell_back"].get<int64_t>(), 0) << where;
  }
}

TEST(FastPathCallsCuda, ViTTrainingStepsTakeEveryPathWithoutFallingBack) {
  REQUIRE_CUDA_KERNELS();
  for (const auto* preset : {"tiny", "base"}) {
    expect_every_path_taken(preset, "dense");
    expect_every_path_taken(preset, "exfusion");
  }
}

}  // namespace
}  // namespace exfusion
