// Gradients of the ExFusion FFN (experts, fusion weights, router) against central finite
// differences in double precision.
#include <gtest/gtest.h>

#include "exfusion/fusion/exfusion_ffn.h"

namespace exfusion {
namespace {

// Absolute tolerance between autograd and central differences with step 1e-6 in float64.
constexpr double kGradTolerance = 1e-6;

class FfnGradients : public ::testing::TestWithParam<std::pair<FusionVariant, bool>> {};

TEST_P(FfnGradients, MatchFiniteDifferences) {
  torch::manual_seed(0);
  const auto [variant, per_set] = GetParam();
  ExFusionMlp ffn(
      6, 10,
      ExFusionOptions().variant(variant).num_experts(3).momentum(0.5).router_per_set(per_set));
  ffn->to(torch::kFloat64);
  {
    torch::NoGradGuard no_grad;
    for (auto& b : ffn->buffers()) b.uniform_(0.1, 0.5);  // a non-trivial M_prev
  }
  const auto x = torch::randn({2, 3, 6}, torch::kFloat64);
  const auto probe = torch::randn({2, 3, 6}, torch::kFloat64);
  std::vector<torch::Tensor> banks;
  for (auto& b : ffn->buffers()) banks.push_back(b.clone());
  // The memory bank updates itself on every training forward: restore M_prev each time.
  auto loss = [&]() {
    {
      torch::NoGradGuard no_grad;
      size_t i = 0;
      for (auto& b : ffn->buffers()) b.copy_(banks[i++]);
    }
    return (ffn->forward(x) * probe).sum();
  };
  loss().backward();

  const double eps = 1e-6;
  int checked = 0;
  for (auto& item : ffn->named_parameters()) {
    auto p = item.value();
    ASSERT_TRUE(p.grad().defined()) << item.key();
    auto flat = p.detach().view(-1);
    const auto grad = p.grad().view(-1);
    const int64_t stride = std::max<int64_t>(1, flat.numel() / 7);
    for (int64_t i = 0; i < flat.numel(); i += stride) {
      torch::NoGradGuard no_grad;
      const double original = flat[i].item<double>();
      flat[i] = original + eps;
      const double up = loss().item<double>();
      flat[i] = original - eps;
      const double down = loss().item<double>();
      flat[i] = original;
      const double numeric = (up - down) / (2 * eps);
      EXPECT_NEAR(grad[i].item<double>(), numeric, kGradTolerance) << item.key() << "[" << i << "]";
      ++checked;
    }
  }
  EXPECT_GT(checked, 20);
}

INSTANTIATE_TEST_SUITE_P(Variants, FfnGradients,
                         ::testing::Values(std::make_pair(FusionVariant::kStatic, false),
                                           std::make_pair(FusionVariant::kLearned, false),
                                           std::make_pair(FusionVariant::kMemoryBank, false),
                                           std::make_pair(FusionVariant::kMemoryBank, true)),
                         [](const auto& info) {
                           return to_string(info.param.first) +
                                  (info.param.second ? "_per_set" : "");
                         });

}  // namespace
}  // namespace exfusion
