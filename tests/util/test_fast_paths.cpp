// The fast-path policy, counters and scopes: their bookkeeping, nesting, the innermost scope's
// counters, a context carried to another thread (as autograd's device threads need), a run's
// policy inside its scope only, and that CPU training counts nothing (the GPU half:
// test_fast_paths_gpu.cpp).
#include <gtest/gtest.h>
#include <torch/types.h>

#include <memory>
#include <string>
#include <thread>

#include "../support/tiny_models.h"
#include "exfusion/train/run_config.h"
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
      "bias_grad_epilogue": {"taken": 0, "fell_back": 0},
      "attention_kernels": {"taken": 0, "fell_back": 0},
      "rms_norm_kernels": {"taken": 0, "fell_back": 0},
      "gated_activation_kernels": {"taken": 0, "fell_back": 0},
      "cross_entropy_kernels": {"taken": 0, "fell_back": 0},
      "activation_kernels": {"taken": 0, "fell_back": 0},
      "depthwise_conv_kernels": {"taken": 0, "fell_back": 0}})"));
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
  train.attention_kernels = false;
  train.rms_norm_kernels = false;
  const auto policy = fast_path_policy(train);
  EXPECT_FALSE(policy.allows(FastPath::kExpertKernels));
  EXPECT_TRUE(policy.allows(FastPath::kLayerNormKernels));
  EXPECT_FALSE(policy.allows(FastPath::kBiasGradEpilogue));
  EXPECT_FALSE(policy.allows(FastPath::kAttentionKernels));
  EXPECT_FALSE(policy.allows(FastPath::kRmsNormKernels));
  EXPECT_TRUE(policy.allows(FastPath::kGatedActivationKernels));
}

// Three paths are CUDA-only: CPU training is neither a taken call nor a fallback of theirs;
// the CPU attention and activation kernels take each block's attention and FFN activation once
// per forward; the ViT has no RMS norm, no gated FFN and no depthwise convolution. The trainer's
// step leaves no scope open behind it.
TEST(FastPathCounters, CpuTrainingCountsTheAttentionAndActivationKernels) {
  RunConfig config = default_run_config();
  testing::use_vit(config, testing::tiny_vit("exfusion", FusionVariant::kMemoryBank, 3));
  config.train.device = "cpu";
  config.train.batch_size = 2;
  config.train.layer_norm_kernels = false;
  auto model = build_model(config.model, config.ffn);
  Trainer trainer(config.train, model, make_task(config), torch::kCPU);
  const auto m = testing::vit_of(config);
  trainer.step({torch::randn({2, m.in_chans, m.img_size, m.img_size}),
                torch::randint(0, m.num_classes, {2})});
  for (const auto path : kFastPaths) {
    const bool per_block =
        path == FastPath::kAttentionKernels || path == FastPath::kActivationKernels;
    const int64_t expected = per_block ? m.depth : 0;
    EXPECT_EQ(trainer.fast_path_calls().calls(path).taken, expected) << to_string(path);
    EXPECT_EQ(trainer.fast_path_calls().calls(path).fell_back, 0) << to_string(path);
  }
  EXPECT_TRUE(FastPathScope::policy().layer_norm_kernels);
  EXPECT_EQ(FastPathScope::current().counters, nullptr);
}

}  // namespace
}  // namespace exfusion
