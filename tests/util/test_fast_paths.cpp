// The fast-path policy, counters and scopes: their bookkeeping, nesting, the innermost scope's
// counters, a context carried to another thread (as autograd's device threads need), a run's
// policy inside its scope only, and that CPU training counts nothing; on the GPU machine that
// each path counts a call it does not cover as a fallback, that backward passes count into
// their forward's scope, that evaluation follows its scope's policy, and that bf16 training
// steps of DeiT-Ti and ViT-B blocks take every path, once per call, without one.
#include <gtest/gtest.h>
#include <torch/types.h>

#include <memory>
#include <string>
#include <thread>
#include <utility>

#include "../support/cuda.h"
#include "../support/tiny_models.h"
#include "exfusion/data/loader.h"
#include "exfusion/fusion/expert_kernels.h"
#include "exfusion/fusion/expert_mix.h"
#include "exfusion/layers/layer_norm.h"
#include "exfusion/layers/linear.h"
#include "exfusion/train/evaluate.h"
#include "exfusion/train/run_config.h"
#include "exfusion/train/step_benchmark.h"
#include "exfusion/train/trainer.h"
#include "exfusion/util/fast_paths.h"

namespace exfusion {
namespace {

TEST(FastPathCounters, CountEachPathApart) {
  FastPathCounters counters;
  counters.count(FastPath::kLayerNormKernels, true);
  counters.count(FastPath::kLayerNormKernels, true);
  counters.count(FastPath::kLayerNormKernels, false);
  counters.count(FastPath::kBiasGradEpilogue, false);
  EXPECT_EQ(counters.calls(FastPath::kLayerNormKernels).taken, 2);
  EXPECT_EQ(counters.calls(FastPath::kLayerNormKernels).fell_back, 1);
  EXPECT_EQ(counters.calls(FastPath::kBiasGradEpilogue).taken, 0);
  EXPECT_EQ(counters.calls(FastPath::kBiasGradEpilogue).fell_back, 1);
  EXPECT_EQ(counters.calls(FastPath::kExpertKernels).taken, 0);
  EXPECT_EQ(counters.calls(FastPath::kExpertKernels).fell_back, 0);
}

TEST(FastPathCounters, JsonAndMessageReportEachPath) {
  FastPathCounters counters;
  EXPECT_EQ(counters.fallbacks_message(), "");
  for (int i = 0; i < 3; ++i) counters.count(FastPath::kLayerNormKernels, true);
  counters.count(FastPath::kLayerNormKernels, false);
  counters.count(FastPath::kExpertKernels, true);
  const auto json = counters.to_json();
  EXPECT_EQ(json, nlohmann::json::parse(R"({"expert_kernels": {"taken": 1, "fell_back": 0},
      "layer_norm_kernels": {"taken": 3, "fell_back": 1},
      "bias_grad_epilogue": {"taken": 0, "fell_back": 0}})"));
  const std::string message =
      "1 of 4 layer_norm_kernels calls fell back to the ATen route (same math, slower; "
      "train.layer_norm_kernels)\n";
  EXPECT_EQ(counters.fallbacks_message(), message);
  // The bench's JSON, read back, says the same.
  EXPECT_EQ(fast_path_fallbacks_message(json), message);
}

TEST(FastPathCounters, AreNamedAfterTheirSwitches) {
  EXPECT_EQ(to_string(FastPath::kExpertKernels), "expert_kernels");
  EXPECT_EQ(to_string(FastPath::kLayerNormKernels), "layer_norm_kernels");
  EXPECT_EQ(to_string(FastPath::kBiasGradEpilogue), "bias_grad_epilogue");
}

TEST(FastPathPolicy, AllowsEachPathByItsOwnSwitch) {
  const FastPathPolicy all;
  for (const auto path : kFastPaths) EXPECT_TRUE(all.allows(path)) << to_string(path);
  FastPathPolicy policy;
  policy.layer_norm_kernels = false;
  EXPECT_TRUE(policy.allows(FastPath::kExpertKernels));
  EXPECT_FALSE(policy.allows(FastPath::kLayerNormKernels));
  EXPECT_TRUE(policy.allows(FastPath::kBiasGradEpilogue));
}

TEST(FastPathScope, WithoutOneEveryPathIsAllowedAndNothingIsCounted) {
  for (const auto path : kFastPaths) {
    EXPECT_TRUE(FastPathScope::policy().allows(path)) << to_string(path);
  }
  EXPECT_EQ(FastPathScope::current().counters, nullptr);
  count_fast_path_call(FastPath::kExpertKernels, true);  // goes nowhere, and does not fail
}

TEST(FastPathScope, ScopesNestAndRestoreTheEnclosingOne) {
  FastPathPolicy outer_policy;
  outer_policy.layer_norm_kernels = false;
  FastPathPolicy inner_policy;
  inner_policy.expert_kernels = false;
  {
    const FastPathScope outer(outer_policy);
    EXPECT_FALSE(FastPathScope::policy().layer_norm_kernels);
    EXPECT_EQ(FastPathScope::current().counters, outer.counters());
    {
      const FastPathScope inner(inner_policy);
      EXPECT_TRUE(FastPathScope::policy().layer_norm_kernels);
      EXPECT_FALSE(FastPathScope::policy().expert_kernels);
      EXPECT_EQ(FastPathScope::current().counters, inner.counters());
    }
    EXPECT_FALSE(FastPathScope::policy().layer_norm_kernels);
    EXPECT_TRUE(FastPathScope::policy().expert_kernels);
    EXPECT_EQ(FastPathScope::current().counters, outer.counters());
  }
  for (const auto path : kFastPaths) {
    EXPECT_TRUE(FastPathScope::policy().allows(path)) << to_string(path);
  }
  EXPECT_EQ(FastPathScope::current().counters, nullptr);
}

TEST(FastPathScope, CountsGoToTheInnermostScope) {
  const FastPathScope outer(FastPathPolicy{});
  count_fast_path_call(FastPath::kLayerNormKernels, true);
  {
    const FastPathScope inner(FastPathPolicy{});
    count_fast_path_call(FastPath::kLayerNormKernels, false);
    count_fast_path_call(FastPath::kLayerNormKernels, false);
    EXPECT_EQ(inner.counters()->calls(FastPath::kLayerNormKernels).fell_back, 2);
    EXPECT_EQ(inner.counters()->calls(FastPath::kLayerNormKernels).taken, 0);
  }
  count_fast_path_call(FastPath::kLayerNormKernels, true);
  EXPECT_EQ(outer.counters()->calls(FastPath::kLayerNormKernels).taken, 2);
  EXPECT_EQ(outer.counters()->calls(FastPath::kLayerNormKernels).fell_back, 0);
}

TEST(FastPathScope, SharesTheCountersItIsGiven) {
  const auto counters = std::make_shared<FastPathCounters>();
  {
    const FastPathScope first(FastPathPolicy{}, counters);
    count_fast_path_call(FastPath::kExpertKernels, true);
  }
  const FastPathScope second(FastPathContext{FastPathPolicy{}, counters});
  EXPECT_EQ(second.counters(), counters);
  count_fast_path_call(FastPath::kExpertKernels, true);
  EXPECT_EQ(counters->calls(FastPath::kExpertKernels).taken, 2);
}

// What a backward pass on an autograd device thread sees: none of the caller's scopes, until
// it opens the context its node kept from the forward.
TEST(FastPathScope, ACapturedContextCountsIntoItsCountersOnAnotherThread) {
  FastPathPolicy policy;
  policy.bias_grad_epilogue = false;
  const FastPathScope scope(policy);
  const auto captured = FastPathScope::current();
  bool default_policy_there = false;
  bool captured_policy_there = true;
  std::thread other([&] {
    default_policy_there =
        FastPathScope::policy().bias_grad_epilogue && FastPathScope::current().counters == nullptr;
    count_fast_path_call(FastPath::kBiasGradEpilogue, false);  // no scope here: not counted
    const FastPathScope reopened(captured);
    captured_policy_there = FastPathScope::policy().bias_grad_epilogue;
    count_fast_path_call(FastPath::kBiasGradEpilogue, true);
  });
  other.join();
  EXPECT_TRUE(default_policy_there);
  EXPECT_FALSE(captured_policy_there);
  EXPECT_EQ(scope.counters()->calls(FastPath::kBiasGradEpilogue).taken, 1);
  EXPECT_EQ(scope.counters()->calls(FastPath::kBiasGradEpilogue).fell_back, 0);
}

// `exfusion eval` and training open a scope from the run's train.*: a run trained with
// train.layer_norm_kernels=false is evaluated without the kernels, and nothing outside the
// scope is affected.
TEST(FastPathScope, ARunsPolicyHoldsInsideItsScopeOnly) {
  TrainConfig train;
  train.layer_norm_kernels = false;
  {
    const FastPathScope scope(fast_path_policy(train));
    EXPECT_FALSE(FastPathScope::policy().allows(FastPath::kLayerNormKernels));
    EXPECT_TRUE(FastPathScope::policy().allows(FastPath::kExpertKernels));
    EXPECT_TRUE(FastPathScope::policy().allows(FastPath::kBiasGradEpilogue));
  }
  EXPECT_TRUE(FastPathScope::policy().allows(FastPath::kLayerNormKernels));
  train = TrainConfig{};
  train.expert_kernels = false;
  train.bias_grad_epilogue = false;
  const auto policy = fast_path_policy(train);
  EXPECT_FALSE(policy.allows(FastPath::kExpertKernels));
  EXPECT_TRUE(policy.allows(FastPath::kLayerNormKernels));
  EXPECT_FALSE(policy.allows(FastPath::kBiasGradEpilogue));
}

// The paths are CUDA-only: CPU training is neither a taken call nor a fallback. The trainer's
// step leaves no scope open behind it.
TEST(FastPathCounters, CpuTrainingCountsNothing) {
  RunConfig config = default_run_config();
  config.model = testing::tiny_vit(FfnKind::kExFusion, FusionVariant::kMemoryBank, 3);
  config.train.device = "cpu";
  config.train.batch_size = 2;
  config.train.layer_norm_kernels = false;
  VisionTransformer model(config.model);
  Trainer trainer(config, model, torch::kCPU);
  const auto& m = config.model;
  trainer.step({torch::randn({2, m.in_chans, m.img_size, m.img_size}),
                torch::randint(0, m.num_classes, {2})});
  for (const auto path : kFastPaths) {
    EXPECT_EQ(trainer.fast_path_calls().calls(path).taken, 0) << to_string(path);
    EXPECT_EQ(trainer.fast_path_calls().calls(path).fell_back, 0) << to_string(path);
  }
  EXPECT_TRUE(FastPathScope::policy().layer_norm_kernels);
  EXPECT_EQ(FastPathScope::current().counters, nullptr);
}

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
    evaluate(model, loader, torch::kCUDA, /*bf16=*/true, /*keep_logits=*/false);
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
// the head. The memory-bank router is a plain at::linear without the node and is not counted.
void expect_every_path_taken(const std::string& preset, FfnKind ffn) {
  RunConfig config = default_run_config();
  config.model = vit_preset(preset);
  config.model.ffn.kind = ffn;
  config.model.ffn.exfusion.variant(FusionVariant::kMemoryBank).num_experts(4);
  config.train.device = "cuda";
  config.train.batch_size = 4;
  BenchmarkOptions options;
  options.warmup_steps = 1;
  options.timed_steps = 1;
  const auto result = benchmark_training_step(config, options);
  ASSERT_EQ(result["precision"], "bf16");
  const int64_t steps = options.warmup_steps + options.timed_steps;
  const int64_t depth = config.model.depth;
  const auto expected_taken = [&](FastPath path) -> int64_t {
    switch (path) {
      case FastPath::kLayerNormKernels:
        return (2 * depth + 1) * steps;
      case FastPath::kBiasGradEpilogue:
        return (4 * depth + 1) * steps;
      case FastPath::kExpertKernels:
        return ffn == FfnKind::kExFusion ? 10 * depth * steps : 0;
    }
    return -1;
  };
  for (const auto path : kFastPaths) {
    const auto& calls = result["fast_path_calls"][to_string(path)];
    const auto where = preset + " " + to_string(ffn) + " " + to_string(path);
    EXPECT_EQ(calls["taken"].get<int64_t>(), expected_taken(path)) << where;
    EXPECT_EQ(calls["fell_back"].get<int64_t>(), 0) << where;
  }
}

TEST(FastPathCallsCuda, ViTTrainingStepsTakeEveryPathWithoutFallingBack) {
  REQUIRE_CUDA_KERNELS();
  for (const auto* preset : {"tiny", "base"}) {
    expect_every_path_taken(preset, FfnKind::kDense);
    expect_every_path_taken(preset, FfnKind::kExFusion);
  }
}

}  // namespace
}  // namespace exfusion
