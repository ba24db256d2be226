// On the GPU machine: the LayerNorm CUDA kernels against the ATen reference (shapes, dtypes,
// the ViT's views), LibTorch's LayerNorm for rows the kernels do not cover, the module as the
// current FastPathScope allows, and a short training run against LibTorch's LayerNorm.
#include <gtest/gtest.h>
#include <torch/types.h>

#include <cmath>
#include <string>
#include <tuple>

#include "../support/cuda.h"
#include "../support/layer_norms.h"
#include "../support/trajectory.h"
#include "exfusion/layers/layer_norm.h"
#include "exfusion/util/device.h"
#include "exfusion/util/fast_paths.h"

namespace exfusion {
namespace {

// float32 statistics summed in another order than the reference's.
constexpr double kLayerNormFloatTolerance = 1e-5;
// bf16 outputs are compared after both are rounded to bf16: one ulp is 2^-8 to 2^-7 relative.
constexpr double kLayerNormBf16Tolerance = 1.0 / 128;

// (rows, width, input dtype, output dtype): widths across the 8/16/32 values-per-lane
// variants, partial last warps, one row and many; float32 out is plain float32 training,
// bf16 out from float32 in is autocast, fp16 in and out is an fp16 model.
class LayerNormKernelsCuda
    : public ::testing::TestWithParam<
          std::tuple<int64_t, int64_t, torch::ScalarType, torch::ScalarType>> {};

TEST_P(LayerNormKernelsCuda, ForwardAndBackwardMatchTheReference) {
  REQUIRE_CUDA_KERNELS();
  const auto [rows, width, in_dtype, out_dtype] = GetParam();
  torch::manual_seed(3);
  auto norm = testing::make_norm(width, torch::kFloat32, torch::kCUDA);
  const auto x_value = (torch::randn({rows, width}, torch::kCUDA) * 2 + 0.5).to(in_dtype);
  const auto x = x_value.clone().requires_grad_();
  torch::Tensor y;
  {
    const AutocastGuard autocast(out_dtype == torch::kBFloat16 && in_dtype == torch::kFloat32);
    y = layer_norm(x, norm);
  }
  ASSERT_EQ(y.scalar_type(), out_dtype);
  const auto [want_y, mean, rstd] = reference::layer_norm_forward(
      x_value, norm->weight.detach(), norm->bias.detach(), testing::kLayerNormEps, out_dtype);
  const double out_tolerance =
      out_dtype == torch::kFloat32 ? kLayerNormFloatTolerance : kLayerNormBf16Tolerance;
  EXPECT_TRUE(torch::allclose(y.to(torch::kFloat32), want_y.to(torch::kFloat32), out_tolerance,
                              out_tolerance));

  const auto dy = torch::randn({rows, width}, torch::kCUDA).to(out_dtype);
  y.backward(dy);
  const auto [dx, dgamma, dbeta] =
      reference::layer_norm_backward(dy, x_value, mean, rstd, norm->weight.detach());
  const double in_tolerance =
      in_dtype == torch::kFloat32 ? kLayerNormFloatTolerance : kLayerNormBf16Tolerance;
  EXPECT_TRUE(torch::allclose(x.grad().to(torch::kFloat32), dx.to(torch::kFloat32), in_tolerance,
                              in_tolerance));
  // Sums over the rows: the tolerance grows with their number.
  const double sum_tolerance = kLayerNormFloatTolerance * std::sqrt(static_cast<double>(rows));
  EXPECT_TRUE(
      torch::allclose(norm->weight.grad(), dgamma, kLayerNormFloatTolerance, sum_tolerance));
  EXPECT_TRUE(torch::allclose(norm->bias.grad(), dbeta, kLayerNormFloatTolerance, sum_tolerance));
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, LayerNormKernelsCuda,
    ::testing::Values(
        std::make_tuple(int64_t{1}, int64_t{192}, torch::kFloat32, torch::kFloat32),
        std::make_tuple(int64_t{7}, int64_t{33}, torch::kFloat32, torch::kFloat32),
        std::make_tuple(int64_t{5000}, int64_t{192}, torch::kFloat32, torch::kBFloat16),
        std::make_tuple(int64_t{300}, int64_t{384}, torch::kFloat32, torch::kFloat32),
        std::make_tuple(int64_t{300}, int64_t{768}, torch::kFloat32, torch::kBFloat16),
        std::make_tuple(int64_t{64}, int64_t{1000}, torch::kBFloat16, torch::kBFloat16),
        std::make_tuple(int64_t{17}, int64_t{1024}, torch::kFloat32, torch::kFloat32),
        std::make_tuple(int64_t{7}, int64_t{192}, torch::kHalf, torch::kHalf),
        // DeiT-Ti's 256 × 197 rows at ViT-B/16's width: many blocks, partial sums at their cap.
        std::make_tuple(int64_t{256} * 197, int64_t{768}, torch::kFloat32, torch::kBFloat16)));

// The ViT hands the norm views: its tokens without the class token, its class token alone.
// The kernels read them through a contiguous copy and give x's shape and strided slots back.
TEST(LayerNormViewsCuda, TokensWithoutAndWithOnlyTheClassTokenMatchTheReference) {
  REQUIRE_CUDA_KERNELS();
  torch::manual_seed(5);
  auto norm = testing::make_norm(192, torch::kFloat32, torch::kCUDA);
  const auto tokens = torch::randn({3, 197, 192}, torch::kCUDA) * 2;
  for (const bool class_token : {false, true}) {
    norm->zero_grad();
    const auto leaf = tokens.clone().requires_grad_();
    const auto x = class_token ? leaf.select(1, 0) : leaf.narrow(1, 1, 196);
    ASSERT_FALSE(x.is_contiguous());
    const auto y = layer_norm(x, norm);
    ASSERT_EQ(y.sizes(), x.sizes());
    const auto [want_y, mean, rstd] =
        reference::layer_norm_forward(x.detach(), norm->weight.detach(), norm->bias.detach(),
                                      testing::kLayerNormEps, torch::kFloat32);
    EXPECT_TRUE(torch::allclose(y, want_y, kLayerNormFloatTolerance, kLayerNormFloatTolerance))
        << class_token;
    const auto dy = torch::randn(x.sizes(), torch::kCUDA);
    y.backward(dy);
    const auto [dx, dgamma, dbeta] =
        reference::layer_norm_backward(dy, x.detach(), mean, rstd, norm->weight.detach());
    auto want_grad = torch::zeros_like(tokens);
    (class_token ? want_grad.select(1, 0) : want_grad.narrow(1, 1, 196)).copy_(dx);
    EXPECT_TRUE(
        torch::allclose(leaf.grad(), want_grad, kLayerNormFloatTolerance, kLayerNormFloatTolerance))
        << class_token;
    EXPECT_TRUE(torch::allclose(norm->weight.grad(), dgamma, kLayerNormFloatTolerance, 1e-3))
        << class_token;
    EXPECT_TRUE(torch::allclose(norm->bias.grad(), dbeta, kLayerNormFloatTolerance, 1e-3))
        << class_token;
  }
}

TEST(LayerNormKernels, WiderRowsUseLibTorchsLayerNorm) {
  REQUIRE_CUDA_KERNELS();
  torch::manual_seed(4);
  auto norm = testing::make_norm(1536, torch::kFloat32, torch::kCUDA);
  const auto x = torch::randn({4, 1536}, torch::kCUDA);
  EXPECT_TRUE(torch::equal(layer_norm(x, norm), norm->forward(x)));
}

// Four steps of a small ViT on the GPU, float32, with the kernels and with LibTorch's
// LayerNorm: the same trajectory up to float32 summation order.
testing::NamedParams layer_norm_run_params(bool layer_norm_kernels) {
  auto config = testing::tiny_training_config("cuda");
  config.train.layer_norm_kernels = layer_norm_kernels;
  return testing::train_tiny_vit(config, 4);
}

TEST(LayerNormKernels, TrainingFollowsLibTorchsLayerNorm) {
  REQUIRE_CUDA_KERNELS();
  const auto with_kernels = layer_norm_run_params(true);
  const auto without = layer_norm_run_params(false);
  EXPECT_LT(testing::max_param_diff(with_kernels, without), testing::kTrajectoryTolerance);
}

// The module's forward is layer_norm()'s: the kernels where the scope allows them, counted in
// its counters, LibTorch's LayerNorm where it does not.
TEST(LayerNormKernels, TheModuleFollowsTheScopesPolicy) {
  REQUIRE_CUDA_KERNELS();
  torch::manual_seed(6);
  LayerNorm norm(LayerNormOptions(192).eps(testing::kLayerNormEps));
  norm->to(torch::kCUDA);
  const auto x = torch::randn({5, 192}, torch::kCUDA).requires_grad_();
  {
    const FastPathScope scope(FastPathPolicy{});
    const auto y = norm->forward(x);
    EXPECT_NE(y.grad_fn()->name().find("FusedLayerNorm"), std::string::npos) << y.grad_fn()->name();
    EXPECT_EQ(scope.counters()->calls(FastPath::kLayerNormKernels).taken, 1);
  }
  FastPathPolicy off;
  off.layer_norm_kernels = false;
  const FastPathScope scope(off);
  const auto y = norm->forward(x);
  EXPECT_EQ(y.grad_fn()->name().find("FusedLayerNorm"), std::string::npos) << y.grad_fn()->name();
  EXPECT_TRUE(
      torch::equal(y, at::layer_norm(x, {192}, norm->weight, norm->bias, testing::kLayerNormEps)));
  EXPECT_EQ(scope.counters()->calls(FastPath::kLayerNormKernels).taken, 0);
  EXPECT_EQ(scope.counters()->calls(FastPath::kLayerNormKernels).fell_back, 0);
}

}  // namespace
}  // namespace exfusion
