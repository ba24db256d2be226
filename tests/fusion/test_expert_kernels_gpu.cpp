// On the GPU machine: the expert-bank CUDA kernels (mix, coefficient gradient, factored AdamW)
// against their ATen references, across expert counts, shapes and dtypes.
#include <gtest/gtest.h>
#include <torch/types.h>

#include <cmath>
#include <tuple>

#include "../support/cuda.h"
#include "exfusion/fusion/expert_kernels.h"

namespace exfusion {
namespace {

// float32 sums of a few thousand products in a different order; bf16 outputs are compared
// after rounding both to bf16, so they may differ by one bf16 ulp (2^-8 relative).
constexpr double kFloatTolerance = 1e-5;
constexpr double kBf16Tolerance = 1.0 / 128;

// (experts, rows, cols, output/gradient dtype): N across the 8-expert register passes,
// element counts with and without the 4-wide vector path.
class ExpertKernelsCuda
    : public ::testing::TestWithParam<std::tuple<int64_t, int64_t, int64_t, torch::ScalarType>> {};

double tolerance(torch::ScalarType dtype) {
  return dtype == torch::kFloat32 ? kFloatTolerance : kBf16Tolerance;
}

TEST_P(ExpertKernelsCuda, MixMatchesReference) {
  REQUIRE_CUDA_KERNELS();
  const auto [n, rows, cols, dtype] = GetParam();
  torch::manual_seed(3);
  const auto experts = torch::randn({n, rows, cols}, torch::kCUDA);
  const auto coeffs = torch::softmax(torch::randn({n}, torch::kCUDA), 0);
  const auto got = mix_experts(experts, coeffs, dtype);
  const auto want = reference::mix_experts(experts, coeffs, dtype);
  ASSERT_EQ(got.scalar_type(), dtype);
  ASSERT_EQ(got.sizes(), want.sizes());
  EXPECT_TRUE(torch::allclose(got.to(torch::kFloat32), want.to(torch::kFloat32), tolerance(dtype),
                              tolerance(dtype)));
}

TEST_P(ExpertKernelsCuda, CoefficientGradMatchesReference) {
  REQUIRE_CUDA_KERNELS();
  const auto [n, rows, cols, dtype] = GetParam();
  torch::manual_seed(4);
  const auto experts = torch::randn({n, rows, cols}, torch::kCUDA);
  const auto grad = torch::randn({rows, cols}, torch::kCUDA).to(dtype);
  const auto got = mix_coefficient_grad(experts, grad);
  const auto want = reference::mix_coefficient_grad(experts, grad);
  // A sum of rows·cols products: the tolerance scales with its magnitude.
  const double scale = std::sqrt(static_cast<double>(rows * cols));
  EXPECT_TRUE(torch::allclose(got, want, 1e-5, 1e-5 * scale)) << got << want;
}

TEST_P(ExpertKernelsCuda, FactoredAdamWMatchesReference) {
  REQUIRE_CUDA_KERNELS();
  const auto [n, rows, cols, dtype] = GetParam();
  torch::manual_seed(5);
  const auto params = torch::randn({n, rows, cols}, torch::kCUDA);
  const auto coeffs = torch::softmax(torch::randn({n}, torch::kCUDA), 0);
  const auto scale = torch::tensor(0.7f, torch::kCUDA);
  const AdamWOptions hyper{3e-3, 0.9, 0.999, 1e-8, 0.05};
  auto p1 = params.clone(), m1 = torch::zeros_like(params), v1 = torch::zeros_like(params);
  auto p2 = params.clone(), m2 = torch::zeros_like(params), v2 = torch::zeros_like(params);
  auto s1 = torch::zeros({}, torch::dtype(torch::kFloat32).device(torch::kCUDA));
  auto s2 = s1.clone();
  // The last step reads its learning rate from the device, as a captured CUDA graph does.
  AdamWOptions last = hyper;
  last.lr = 1e-3;
  const auto last_lr = torch::tensor(1e-3f, torch::kCUDA);
  for (int step = 0; step < 3; ++step) {
    const auto grad = torch::randn({rows, cols}, torch::kCUDA).to(dtype);
    s1.add_(1);
    s2.add_(1);
    const auto grad_scale = step == 1 ? torch::Tensor() : scale;
    if (step == 2) {
      factored_adamw_(p1, m1, v1, grad, coeffs, s1, grad_scale, hyper, last_lr);
      reference::factored_adamw_(p2, m2, v2, grad, coeffs, s2, grad_scale, last);
    } else {
      factored_adamw_(p1, m1, v1, grad, coeffs, s1, grad_scale, hyper);
      reference::factored_adamw_(p2, m2, v2, grad, coeffs, s2, grad_scale, hyper);
    }
  }
  EXPECT_TRUE(torch::allclose(p1, p2, 1e-5, 1e-6));
  EXPECT_TRUE(torch::allclose(m1, m2, 1e-5, 1e-7));
  EXPECT_TRUE(torch::allclose(v1, v2, 1e-5, 1e-9));
  // Written through raw pointers, so each call tells autograd, as in-place ops would.
  EXPECT_EQ(p1._version(), 3);
  EXPECT_EQ(m1._version(), 3);
  EXPECT_EQ(v1._version(), 3);
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, ExpertKernelsCuda,
    ::testing::Values(std::make_tuple(int64_t{4}, int64_t{384}, int64_t{96}, torch::kBFloat16),
                      std::make_tuple(int64_t{4}, int64_t{384}, int64_t{96}, torch::kFloat32),
                      std::make_tuple(int64_t{1}, int64_t{33}, int64_t{7}, torch::kFloat32),
                      std::make_tuple(int64_t{13}, int64_t{257}, int64_t{3}, torch::kBFloat16),
                      std::make_tuple(int64_t{32}, int64_t{768}, int64_t{192}, torch::kBFloat16)));

}  // namespace
}  // namespace exfusion
