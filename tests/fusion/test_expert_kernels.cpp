// The expert-bank primitives' ATen references against direct loops (the CUDA kernels against
// these references: test_expert_kernels_gpu.cpp).
#include <gtest/gtest.h>
#include <torch/types.h>

#include <string>

#include "exfusion/fusion/expert_kernels.h"

namespace exfusion {
namespace {

// float32 sums of a few products in a different order.
constexpr double kFloatTolerance = 1e-5;

TEST(ExpertKernelsReference, MixIsTheWeightedSum) {
  torch::manual_seed(0);
  const auto experts = torch::randn({3, 5, 7});
  const auto coeffs = torch::tensor({0.2f, -0.5f, 1.3f});
  const auto expected = 0.2 * experts[0] - 0.5 * experts[1] + 1.3 * experts[2];
  EXPECT_TRUE(torch::allclose(reference::mix_experts(experts, coeffs, torch::kFloat32), expected,
                              kFloatTolerance, kFloatTolerance));
  EXPECT_EQ(reference::mix_experts(experts, coeffs, torch::kBFloat16).scalar_type(),
            torch::kBFloat16);
}

// Tensors on two devices get a clear error before any kernel reads a pointer of the wrong
// kind (the meta device stands in for a GPU here).
TEST(ExpertKernelsReference, ArgumentsOnAnotherDeviceAreRefused) {
  const auto experts = torch::empty({2, 3}, torch::kMeta);
  const auto expect_error = [](const auto& call, const std::string& text) {
    try {
      call();
      ADD_FAILURE() << "expected an error mentioning " << text;
    } catch (const c10::Error& error) {
      EXPECT_NE(std::string(error.what()).find(text), std::string::npos) << error.what();
    }
  };
  expect_error([&] { mix_experts(experts, torch::ones({2}), torch::kFloat32); },
               "but coefficients on cpu");
  expect_error([&] { mix_coefficient_grad(experts, torch::ones({3})); },
               "but their gradient on cpu");
}

TEST(ExpertKernelsReference, CoefficientGradIsTheInnerProduct) {
  torch::manual_seed(1);
  const auto experts = torch::randn({4, 6, 3});
  const auto grad = torch::randn({6, 3});
  const auto dm = reference::mix_coefficient_grad(experts, grad);
  for (int64_t i = 0; i < 4; ++i) {
    EXPECT_NEAR(dm[i].item<double>(), (experts[i] * grad).sum().item<double>(), kFloatTolerance);
  }
}

TEST(ExpertKernelsReference, FactoredAdamWEqualsAdamWOnMaterialisedGradients) {
  torch::manual_seed(2);
  const auto params = torch::randn({3, 4, 5});
  const auto grad = torch::randn({4, 5});
  const auto coeffs = torch::tensor({0.5f, 0.25f, 0.25f});
  const auto scale = torch::tensor(0.5f);
  auto p1 = params.clone(), m1 = torch::zeros_like(params), v1 = torch::zeros_like(params);
  auto p2 = params.clone(), m2 = torch::zeros_like(params), v2 = torch::zeros_like(params);
  const auto step1 = torch::tensor(1.0f), step2 = torch::tensor(1.0f);
  const AdamWOptions hyper{1e-2, 0.9, 0.999, 1e-8, 0.05};
  reference::factored_adamw_(p1, m1, v1, grad, coeffs, step1, scale, hyper);
  // Expert i's gradient is coeffs[i] · scale · grad.
  const auto full = (coeffs.view({3, 1, 1}) * grad.unsqueeze(0) * 0.5).contiguous();
  at::_fused_adamw_({p2}, {full}, {m2}, {v2}, {}, {step2}, hyper.lr, hyper.beta1, hyper.beta2,
                    hyper.weight_decay, hyper.eps, false, false);
  EXPECT_TRUE(torch::allclose(p1, p2, 0, kFloatTolerance));
  EXPECT_TRUE(torch::allclose(m1, m2, 0, kFloatTolerance));
  EXPECT_TRUE(torch::allclose(v1, v2, 0, kFloatTolerance));
}

TEST(ExpertKernelsReference, FactoredAdamWReadsTheLearningRateTensorInsteadOfTheOption) {
  torch::manual_seed(3);
  const auto params = torch::randn({2, 3, 4});
  const auto grad = torch::randn({3, 4});
  const auto coeffs = torch::tensor({0.75f, 0.25f});
  const AdamWOptions stale{1e-1, 0.9, 0.999, 1e-8, 0.05};
  AdamWOptions current = stale;
  current.lr = 2e-3;
  auto p1 = params.clone(), m1 = torch::zeros_like(params), v1 = torch::zeros_like(params);
  auto p2 = params.clone(), m2 = torch::zeros_like(params), v2 = torch::zeros_like(params);
  const auto step1 = torch::tensor(1.0f), step2 = torch::tensor(1.0f);
  reference::factored_adamw_(p1, m1, v1, grad, coeffs, step1, {}, stale, torch::tensor(2e-3f));
  reference::factored_adamw_(p2, m2, v2, grad, coeffs, step2, {}, current);
  EXPECT_TRUE(torch::allclose(p1, p2, 0, kFloatTolerance));
  // A step of lr 0.1 would have moved every weight by about 0.1.
  EXPECT_LT((p1 - params).abs().max().item<double>(), 1e-2);
}

}  // namespace
}  // namespace exfusion
