// The CPU gated-activation kernels against their reference, the ATen composite act(gate) ⊙ up
// (train.gated_activation_kernels = false) and its float64 evaluation: output and both
// gradients for exact GELU, tanh GELU, SiLU and ReLU, on values across the activations' whole
// range (far negative, around 0, far positive: the exponential's clamps) and a count that is no
// multiple of 16; other dtypes fall back, counted.
#include <gtest/gtest.h>

#include "exfusion/layers/gated_activation.h"
#include "exfusion/util/fast_paths.h"

namespace exfusion {
namespace {

struct GatedPass {
  torch::Tensor out, grad_gate, grad_up;
  FastPathCalls calls;
};

GatedPass run_gated(Activation activation, const torch::Tensor& gate, const torch::Tensor& up,
                    const torch::Tensor& grad_out, bool kernels) {
  FastPathPolicy policy;
  policy.gated_activation_kernels = kernels;
  const FastPathScope scope(policy);
  const auto g = gate.detach().requires_grad_();
  const auto u = up.detach().requires_grad_();
  const auto out = gated_activation(activation, g, u);
  out.backward(grad_out);
  return {out.detach(), g.grad(), u.grad(),
          scope.counters()->calls(FastPath::kGatedActivationKernels)};
}

// Tolerance, against the composite evaluated in float64 (the exact values, for float32's
// purposes): the kernels' worst error may be at most four times the float32 composite's own
// worst error plus 1e-6. Neither is exact: both round the exponential or tanh to an ulp or two
// and the products after it (exact GELU's erfc is Abramowitz & Stegun 7.1.26, |error| ≤ 1.5e-7,
// which is 2.3e-6 at most on values up to 30, under float32's rounding of them). Measured on an AMD
// EPYC (AVX-512 clone): the kernels' worst error at most the composite's (2e-6 to 3e-6 here), since
// they never subtract from 1; a wrong term would be off by a sizeable fraction of the values.
void expect_as_accurate_as_the_composite(const torch::Tensor& kernel,
                                         const torch::Tensor& composite, const torch::Tensor& exact,
                                         const char* what) {
  const double kernel_error = (kernel.to(torch::kFloat64) - exact).abs().max().item<double>();
  const double composite_error = (composite.to(torch::kFloat64) - exact).abs().max().item<double>();
  EXPECT_LE(kernel_error, 4 * composite_error + 1e-6)
      << what << ": the composite's error " << composite_error;
}

class GatedActivationKernels : public ::testing::TestWithParam<Activation> {};

TEST_P(GatedActivationKernels, EqualTheCompositeForwardAndBackward) {
  torch::manual_seed(7);
  const int64_t count = 3 * 16384 + 37;  // several tasks, a short last vector
  // Spread over [-30, 30] and dense around 0, where both activations bend.
  auto gate = torch::randn({count}) * 2;
  gate.slice(0, 0, 1000).uniform_(-30, 30);
  const auto up = torch::randn({count});
  const auto grad_out = torch::randn({count});
  const auto kernel = run_gated(GetParam(), gate, up, grad_out, true);
  const auto reference = run_gated(GetParam(), gate, up, grad_out, false);
  const auto exact = run_gated(GetParam(), gate.to(torch::kFloat64), up.to(torch::kFloat64),
                               grad_out.to(torch::kFloat64), false);
  EXPECT_EQ(kernel.calls.taken, 1);
  EXPECT_EQ(kernel.calls.fell_back, 0);
  EXPECT_EQ(reference.calls.taken + reference.calls.fell_back, 0);  // switched off
  expect_as_accurate_as_the_composite(kernel.out, reference.out, exact.out, "output");
  expect_as_accurate_as_the_composite(kernel.grad_gate, reference.grad_gate, exact.grad_gate,
                                      "dL/dgate");
  expect_as_accurate_as_the_composite(kernel.grad_up, reference.grad_up, exact.grad_up, "dL/dup");
}

INSTANTIATE_TEST_SUITE_P(Activations, GatedActivationKernels,
                         ::testing::Values(Activation::kGelu, Activation::kGeluTanh,
                                           Activation::kSilu, Activation::kRelu),
                         [](const auto& info) { return activation_names().name_of(info.param); });

TEST(GatedActivationKernels, OtherDtypesFallBackCounted) {
  const FastPathScope scope(FastPathPolicy{});
  const auto gate = torch::randn({4, 8}, torch::kFloat64);
  const auto up = torch::randn({4, 8}, torch::kFloat64);
  const auto out = gated_activation(Activation::kGelu, gate, up);
  EXPECT_TRUE(torch::equal(out, gated_activation_reference(Activation::kGelu, gate, up)));
  const auto calls = scope.counters()->calls(FastPath::kGatedActivationKernels);
  EXPECT_EQ(calls.taken, 0);
  EXPECT_EQ(calls.fell_back, 1);
}

}  // namespace
}  // namespace exfusion
