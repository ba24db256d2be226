// The fast-path call counters: their bookkeeping, that CPU work counts nothing, and on the GPU
// machine that each path counts a call it does not cover as a fallback and that bf16 training
// steps of DeiT-Ti and ViT-B blocks take every path, once per call, without one.
#include <gtest/gtest.h>
#include <torch/types.h>

#include <string>

#include "../support/cuda.h"
#include "../support/tiny_models.h"
#include "exfusion/fusion/expert_kernels.h"
#include "exfusion/layers/layer_norm.h"
#include "exfusion/layers/linear.h"
#include "exfusion/train/run_config.h"
#include "exfusion/train/step_benchmark.h"
#include "exfusion/train/trainer.h"
#include "exfusion/util/fast_path_calls.h"

namespace exfusion {
namespace {

TEST(FastPathCalls, CountsEachPathApartUntilReset) {
  reset_fast_path_calls();
  count_fast_path_call(FastPath::kLayerNormKernels, true);
  count_fast_path_call(FastPath::kLayerNormKernels, true);
  count_fast_path_call(FastPath::kLayerNormKernels, false);
  count_fast_path_call(FastPath::kBiasGradEpilogue, false);
  EXPECT_EQ(fast_path_calls(FastPath::kLayerNormKernels).taken, 2);
  EXPECT_EQ(fast_path_calls(FastPath::kLayerNormKernels).fell_back, 1);
  EXPECT_EQ(fast_path_calls(FastPath::kBiasGradEpilogue).taken, 0);
  EXPECT_EQ(fast_path_calls(FastPath::kBiasGradEpilogue).fell_back, 1);
  EXPECT_EQ(fast_path_calls(FastPath::kExpertKernels).taken, 0);
  EXPECT_EQ(fast_path_calls(FastPath::kExpertKernels).fell_back, 0);
  reset_fast_path_calls();
  for (const auto path : kFastPaths) {
    EXPECT_EQ(fast_path_calls(path).taken, 0) << to_string(path);
    EXPECT_EQ(fast_path_calls(path).fell_back, 0) << to_string(path);
  }
}

TEST(FastPathCalls, JsonAndMessageReportEachPath) {
  reset_fast_path_calls();
  EXPECT_EQ(fast_path_fallbacks_message(), "");
  for (int i = 0; i < 3; ++i) count_fast_path_call(FastPath::kLayerNormKernels, true);
  count_fast_path_call(FastPath::kLayerNormKernels, false);
  count_fast_path_call(FastPath::kExpertKernels, true);
  const auto json = fast_path_calls_json();
  EXPECT_EQ(json, nlohmann::json::parse(R"({"expert_kernels": {"taken": 1, "fell_back": 0},
      "layer_norm_kernels": {"taken": 3, "fell_back": 1},
      "bias_grad_epilogue": {"taken": 0, "fell_back": 0}})"));
  EXPECT_EQ(fast_path_fallbacks_message(),
            "1 of 4 layer_norm_kernels calls fell back to the ATen route (same math, slower; "
            "train.layer_norm_kernels)\n");
  reset_fast_path_calls();
}

TEST(FastPathCalls, AreNamedAfterTheirSwitches) {
  EXPECT_EQ(to_string(FastPath::kExpertKernels), "expert_kernels");
  EXPECT_EQ(to_string(FastPath::kLayerNormKernels), "layer_norm_kernels");
  EXPECT_EQ(to_string(FastPath::kBiasGradEpilogue), "bias_grad_epilogue");
}

// The paths are CUDA-only: CPU training is neither a taken call nor a fallback.
TEST(FastPathCalls, CpuTrainingCountsNothing) {
  RunConfig config = default_run_config();
  config.model = testing::tiny_vit(FfnKind::kExFusion, FusionVariant::kMemoryBank, 3);
  config.train.device = "cpu";
  config.train.batch_size = 2;
  VisionTransformer model(config.model);
  Trainer trainer(config, model, torch::kCPU);
  reset_fast_path_calls();
  const auto& m = config.model;
  trainer.step({torch::randn({2, m.in_chans, m.img_size, m.img_size}),
                torch::randint(0, m.num_classes, {2})});
  for (const auto path : kFastPaths) {
    EXPECT_EQ(fast_path_calls(path).taken, 0) << to_string(path);
    EXPECT_EQ(fast_path_calls(path).fell_back, 0) << to_string(path);
  }
}

// A CUDA call each path does not cover: LayerNorm wider than the kernels' rows, a float64
// linear layer, a float64 expert mix.
TEST(FastPathCallsCuda, CallsThePathsDoNotCoverAreFallbacks) {
  REQUIRE_CUDA_KERNELS();
  set_layer_norm_kernels_enabled(true);
  set_bias_grad_epilogue_enabled(true);
  set_expert_kernels_enabled(true);
  const auto options = torch::TensorOptions().device(torch::kCUDA);
  reset_fast_path_calls();

  torch::nn::LayerNorm wide(torch::nn::LayerNormOptions({2048}));
  wide->to(torch::kCUDA);
  layer_norm(torch::randn({4, 2048}, options), wide);
  torch::nn::LayerNorm covered(torch::nn::LayerNormOptions({768}));
  covered->to(torch::kCUDA);
  layer_norm(torch::randn({4, 768}, options), covered);
  EXPECT_EQ(fast_path_calls(FastPath::kLayerNormKernels).fell_back, 1);
  EXPECT_EQ(fast_path_calls(FastPath::kLayerNormKernels).taken, 1);

  const auto f64 = options.dtype(torch::kFloat64);
  const auto weight = torch::randn({8, 16}, f64.requires_grad(true));
  const auto bias = torch::randn({8}, f64.requires_grad(true));
  linear(torch::randn({4, 16}, f64), weight, bias).sum().backward();
  EXPECT_EQ(fast_path_calls(FastPath::kBiasGradEpilogue).fell_back, 1);
  EXPECT_EQ(fast_path_calls(FastPath::kBiasGradEpilogue).taken, 0);

  const auto experts = torch::randn({4, 8, 16}, options);
  mix_experts(experts, torch::rand({4}, options), torch::kFloat64);
  EXPECT_EQ(fast_path_calls(FastPath::kExpertKernels).fell_back, 1);
  EXPECT_EQ(fast_path_calls(FastPath::kExpertKernels).taken, 0);
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
