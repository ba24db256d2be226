// ExpertMix's autograd node against autograd through the plain matmul, and its factored
// gradient hand-off (first backward pass to the sink, a second one materialised).
#include <gtest/gtest.h>
#include <torch/types.h>

#include <memory>

#include "exfusion/fusion/expert_mix.h"

namespace exfusion {
namespace {

constexpr double kTolerance = 1e-6;

TEST(ExpertMix, GradientsMatchAutogradThroughMatmul) {
  torch::manual_seed(0);
  const auto experts = torch::randn({3, 4, 5}, torch::kFloat64).requires_grad_();
  const auto logits = torch::randn({3}, torch::kFloat64).requires_grad_();
  const auto upstream = torch::randn({4, 5}, torch::kFloat64);

  (expert_mix(experts, torch::softmax(logits, 0), torch::kFloat64) * upstream).sum().backward();
  const auto de = experts.grad().clone(), dl = logits.grad().clone();
  experts.mutable_grad().reset();
  logits.mutable_grad().reset();
  const auto m = torch::softmax(logits, 0);
  (at::matmul(m.view({1, 3}), experts.view({3, -1})).view({4, 5}) * upstream).sum().backward();
  EXPECT_TRUE(torch::allclose(de, experts.grad(), 0, kTolerance));
  EXPECT_TRUE(torch::allclose(dl, logits.grad(), 0, kTolerance));
}

TEST(ExpertMix, SinkTakesTheFirstGradientAndLaterOnesAreMaterialised) {
  torch::manual_seed(1);
  const auto experts = torch::randn({2, 3, 4}).requires_grad_();
  const auto m1 = torch::tensor({0.25f, 0.75f}), m2 = torch::tensor({0.6f, 0.4f});
  const auto g1 = torch::randn({3, 4}), g2 = torch::randn({3, 4});
  auto sink = std::make_shared<FactoredGradient>();

  (expert_mix(experts, m1, torch::kFloat32, sink) * g1).sum().backward();
  EXPECT_FALSE(experts.grad().defined()) << "the experts' gradient should stay factored";
  ASSERT_TRUE(sink->pending());
  EXPECT_TRUE(torch::allclose(sink->grad, g1));
  EXPECT_TRUE(torch::allclose(sink->coeffs, m1));

  (expert_mix(experts, m2, torch::kFloat32, sink) * g2).sum().backward();
  ASSERT_TRUE(experts.grad().defined());
  EXPECT_TRUE(torch::allclose(experts.grad(), at::outer(m2, g2.reshape(-1)).view({2, 3, 4}), 0,
                              kTolerance));
  // Both passes together are the ordinary accumulated gradient.
  const auto total = experts.grad() + sink->materialize(experts);
  const auto expected = at::outer(m1, g1.reshape(-1)) + at::outer(m2, g2.reshape(-1));
  EXPECT_TRUE(torch::allclose(total, expected.view({2, 3, 4}), 0, kTolerance));

  sink->scale = torch::tensor(0.5f);
  EXPECT_TRUE(torch::allclose(sink->materialize(experts),
                              0.5 * at::outer(m1, g1.reshape(-1)).view({2, 3, 4}), 0, kTolerance));
  sink->clear();
  EXPECT_FALSE(sink->pending());
}

TEST(ExpertMix, NoGraphUnderNoGrad) {
  const auto experts = torch::randn({2, 3}).requires_grad_();
  const torch::NoGradGuard no_grad;
  const auto out = expert_mix(experts, torch::tensor({0.5f, 0.5f}), torch::kFloat32);
  EXPECT_FALSE(out.requires_grad());
  EXPECT_EQ(out.sizes(), torch::IntArrayRef({3}));
}

}  // namespace
}  // namespace exfusion
