// The CPU activation kernels against their reference, ATen's activation (ffn_site.h's activate,
// train.activation_kernels = false) and its float64 evaluation: output and gradient for exact
// GELU, tanh GELU, SiLU and ReLU, on values across their whole range (far negative, around 0,
// far positive: the exponential's clamps) and a count that is no multiple of 16; other dtypes
// fall back, counted.
#include <gtest/gtest.h>

#include "exfusion/layers/activation.h"
#include "exfusion/util/fast_paths.h"

namespace exfusion {
namespace {

struct ActivationPass {
  torch::Tensor out, grad;
  FastPathCalls calls;
};

ActivationPass run_activation(Activation activation, const torch::Tensor& x,
                              const torch::Tensor& grad_out, bool kernels) {
  FastPathPolicy policy;
  policy.activation_kernels = kernels;
  const FastPathScope scope(policy);
  const auto input = x.detach().requires_grad_();
  const auto out = hidden_units_activation(activation, input);
  out.backward(grad_out);
  return {out.detach(), input.grad(), scope.counters()->calls(FastPath::kActivationKernels)};
}

// Tolerance, against ATen's activation evaluated in float64 (the exact values, for float32's
// purposes): the kernels' worst error may be at most four times float32 ATen's own worst error
// plus 1e-6. Exact GELU's erfc is Abramowitz & Stegun 7.1.26, |error| ≤ 1.5e-7, so Φ is off by
// at most 7.5e-8 and x Φ(x) by 7.5e-8 |x| ≤ 2.3e-6 on [-30, 30], under float32's own rounding
// of values up to 30 (ulp 1.9e-6, which ATen's result has too); a wrong term would be off by a
// sizeable fraction of the values.
void expect_as_accurate_as_aten(const torch::Tensor& kernel, const torch::Tensor& aten,
                                const torch::Tensor& exact, const char* what) {
  const double kernel_error = (kernel.to(torch::kFloat64) - exact).abs().max().item<double>();
  const double aten_error = (aten.to(torch::kFloat64) - exact).abs().max().item<double>();
  EXPECT_LE(kernel_error, 4 * aten_error + 1e-6) << what << ": ATen's error " << aten_error;
}

class ActivationKernels : public ::testing::TestWithParam<Activation> {};

TEST_P(ActivationKernels, EqualAtenForwardAndBackward) {
  torch::manual_seed(11);
  const int64_t count = 3 * 16384 + 37;  // several tasks, a short last vector
  // Spread over [-30, 30] and dense around 0, where the activations bend.
  auto x = torch::randn({count}) * 2;
  x.slice(0, 0, 1000).uniform_(-30, 30);
  const auto grad_out = torch::randn({count});
  const auto kernel = run_activation(GetParam(), x, grad_out, true);
  const auto aten = run_activation(GetParam(), x, grad_out, false);
  const auto exact =
      run_activation(GetParam(), x.to(torch::kFloat64), grad_out.to(torch::kFloat64), false);
  EXPECT_EQ(kernel.calls.taken, 1);
  EXPECT_EQ(kernel.calls.fell_back, 0);
  EXPECT_EQ(aten.calls.taken + aten.calls.fell_back, 0);  // switched off
  expect_as_accurate_as_aten(kernel.out, aten.out, exact.out, "output");
  expect_as_accurate_as_aten(kernel.grad, aten.grad, exact.grad, "dL/dx");
}

INSTANTIATE_TEST_SUITE_P(Activations, ActivationKernels,
                         ::testing::Values(Activation::kGelu, Activation::kGeluTanh,
                                           Activation::kSilu, Activation::kRelu),
                         [](const auto& info) { return activation_names().name_of(info.param); });

TEST(ActivationKernels, OtherDtypesFallBackCounted) {
  const FastPathScope scope(FastPathPolicy{});
  const auto x = torch::randn({4, 8}, torch::kFloat64);
  const auto out = hidden_units_activation(Activation::kGelu, x);
  EXPECT_TRUE(torch::equal(out, activate(Activation::kGelu, x)));
  const auto calls = scope.counters()->calls(FastPath::kActivationKernels);
  EXPECT_EQ(calls.taken, 0);
  EXPECT_EQ(calls.fell_back, 1);
}

}  // namespace
}  // namespace exfusion
