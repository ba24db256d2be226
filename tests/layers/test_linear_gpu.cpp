// On the GPU machine: the cuBLASLt bias-gradient epilogue against float64 sums, linear() and
// the Linear module through its node under autocast and as the current FastPathScope allows,
// and a short training run with and without the epilogue.
#include <gtest/gtest.h>
#include <torch/types.h>

#include <ATen/autocast_mode.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <tuple>

#include "../support/cuda.h"
#include "../support/linear_grads.h"
#include "../support/trajectory.h"
#include "exfusion/layers/linear.h"
#include "exfusion/util/fast_paths.h"
#ifdef EXFUSION_WITH_CUDA_KERNELS
#include "../../src/layers/cublaslt_weight_grad.h"
#endif

namespace exfusion {
namespace {

using testing::max_abs_diff;
using testing::run;

// bf16 values one rounding apart: 2^-8 relative, on gradients of magnitude ~sqrt(rows).
constexpr double kLinearBf16Tolerance = 1.0 / 64;

#ifdef EXFUSION_WITH_CUDA_KERNELS
// dW and db from the epilogue GEMM against float64 sums of the same (rounded) inputs. float32
// outputs are checked to float32 accumulation accuracy, which a bf16 GEMM output would miss.
class LinearEpilogueCuda : public ::testing::TestWithParam<
                               std::tuple<int64_t, int64_t, int64_t, torch::Dtype, torch::Dtype>> {
};

TEST_P(LinearEpilogueCuda, MatchesFloat64Sums) {
  REQUIRE_CUDA_KERNELS();
  const auto [rows, in, out, input_dtype, output_dtype] = GetParam();
  torch::manual_seed(4);
  const auto options = torch::TensorOptions().device(torch::kCUDA);
  const auto dy = torch::randn({rows, out}, options).to(input_dtype);
  const auto x = torch::randn({rows, in}, options).to(input_dtype);
  auto dweight = torch::full({out, in}, 7.0, options.dtype(output_dtype));
  auto dbias = torch::full({out}, 7.0, options.dtype(output_dtype));
  ASSERT_TRUE(cuda::linear_weight_bias_grad_cublaslt(dy, x, dweight, dbias))
      << "cuBLASLt offered no algorithm";
  const auto dy64 = dy.to(torch::kFloat64);
  const auto x64 = x.to(torch::kFloat64);
  const auto expected_dweight = dy64.t().mm(x64);
  const auto expected_dbias = dy64.sum(0);
  // Sums of `rows` products of unit-variance values, so errors scale with sqrt(rows). Tensor
  // cores accumulate float32 with truncating adds: 5e-4 · sqrt(rows) covers that, while a
  // bf16 output would miss it by rounding values of up to 4 · sqrt(rows) to 2^-8 relative.
  // A bf16 output is allowed that rounding: half an ulp, at most 2^-8 of the largest value.
  const double accumulation = 5e-4 * std::sqrt(static_cast<double>(rows));
  const bool rounded_to_16_bits = output_dtype != torch::kFloat32;
  const auto tolerance = [accumulation, rounded_to_16_bits](const torch::Tensor& expected) {
    if (!rounded_to_16_bits) return accumulation;
    return expected.abs().max().item<double>() / 256 + accumulation;
  };
  EXPECT_LT(max_abs_diff(dweight, expected_dweight), tolerance(expected_dweight));
  EXPECT_LT(max_abs_diff(dbias, expected_dbias), tolerance(expected_dbias));
}

INSTANTIATE_TEST_SUITE_P(
    ShapesAndDtypes, LinearEpilogueCuda,
    ::testing::Values(
        std::make_tuple(int64_t{25216}, int64_t{768}, int64_t{3072}, torch::kBFloat16,
                        torch::kFloat32),  // ViT-B/16 b128 fc1
        std::make_tuple(int64_t{50432}, int64_t{192}, int64_t{576}, torch::kBFloat16,
                        torch::kBFloat16),  // DeiT-Ti b256 qkv, bf16 fused weights
        std::make_tuple(int64_t{37}, int64_t{24}, int64_t{40}, torch::kFloat16, torch::kFloat32),
        std::make_tuple(int64_t{64}, int64_t{32}, int64_t{16}, torch::kFloat32, torch::kFloat32)));

// Through linear() on CUDA in a bf16 autocast region: the same output as at::linear, the
// gradients within bf16 rounding of at::linear's autograd. The input is a bf16 3-D view two
// bytes off its allocation, which the node hands to cuBLASLt as it is.
TEST(LinearEpilogueCudaNode, FollowsAtLinearUnderAutocast) {
  REQUIRE_CUDA_KERNELS();
  torch::manual_seed(5);
  const auto options = torch::TensorOptions().device(torch::kCUDA);
  constexpr int64_t kElements = int64_t{4} * 13 * 31;
  const auto x = torch::randn({kElements + 1}, options.dtype(torch::kBFloat16))
                     .narrow(0, 1, kElements)
                     .view({4, 13, 31});
  ASSERT_NE(reinterpret_cast<std::uintptr_t>(x.data_ptr()) % 16, 0U);
  const auto weight = torch::randn({9, 31}, options);
  const auto bias = torch::randn({9}, options);
  const auto dy = torch::randn({4, 13, 9}, options);
  const auto in_autocast = [](auto f) {
    return [f](const auto& a, const auto& w, const auto& b) {
      at::autocast::set_autocast_enabled(at::kCUDA, true);
      auto y = f(a, w, b);
      at::autocast::set_autocast_enabled(at::kCUDA, false);
      at::autocast::clear_cache();
      return y;
    };
  };
  const auto got =
      run(in_autocast([](const auto& a, const auto& w, const auto& b) {
            auto y = linear(a, w, b);
            EXPECT_NE(y.grad_fn()->name().find("LinearWithBiasGradEpilogue"), std::string::npos);
            return y;
          }),
          x, weight, bias, dy);
  const auto expected = run(
      in_autocast([](const auto& a, const auto& w, const auto& b) { return at::linear(a, w, b); }),
      x, weight, bias, dy);
  EXPECT_TRUE(torch::equal(got.y, expected.y));
  EXPECT_LT(max_abs_diff(got.dx, expected.dx), kLinearBf16Tolerance);
  EXPECT_LT(max_abs_diff(got.dweight, expected.dweight), kLinearBf16Tolerance * 8);
  EXPECT_LT(max_abs_diff(got.dbias, expected.dbias), kLinearBf16Tolerance * 8);
}

// Four steps of a small ViT with ExFusion-mb on the GPU in float32, with and without the
// epilogue: the same trajectory up to float32 summation order.
testing::NamedParams epilogue_run_params(bool bias_grad_epilogue) {
  auto config = testing::tiny_training_config("cuda");
  config.train.bias_grad_epilogue = bias_grad_epilogue;
  return testing::train_tiny_vit(config, 4);
}

TEST(LinearEpilogueCudaNode, TrainingFollowsAtLinear) {
  REQUIRE_CUDA_KERNELS();
  const auto with_epilogue = epilogue_run_params(true);
  const auto without = epilogue_run_params(false);
  EXPECT_LT(testing::max_param_diff(with_epilogue, without), testing::kTrajectoryTolerance);
}

// The module's forward is linear()'s: the node where the scope allows the epilogue (its call
// counted in the backward, on autograd's device thread, into this scope's counters), at::linear
// where it does not.
TEST(LinearEpilogueCudaNode, TheModuleFollowsTheScopesPolicy) {
  REQUIRE_CUDA_KERNELS();
  torch::manual_seed(6);
  Linear layer(16, 8);
  layer->to(torch::kCUDA);
  const auto x = torch::randn({4, 16}, torch::kCUDA);
  {
    const FastPathScope scope(FastPathPolicy{});
    const auto y = layer->forward(x);
    EXPECT_NE(y.grad_fn()->name().find("LinearWithBiasGradEpilogue"), std::string::npos);
    y.sum().backward();
    EXPECT_EQ(scope.counters()->calls(FastPath::kBiasGradEpilogue).taken, 1);
  }
  FastPathPolicy off;
  off.bias_grad_epilogue = false;
  const FastPathScope scope(off);
  const auto y = layer->forward(x);
  EXPECT_EQ(y.grad_fn()->name().find("LinearWithBiasGradEpilogue"), std::string::npos);
  y.sum().backward();
  EXPECT_EQ(scope.counters()->calls(FastPath::kBiasGradEpilogue).taken, 0);
  EXPECT_EQ(scope.counters()->calls(FastPath::kBiasGradEpilogue).fell_back, 0);
}
#endif

}  // namespace
}  // namespace exfusion
