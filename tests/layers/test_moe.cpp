// The top-k MoE baseline against a direct per-token computation (float64): renormalised
// gates, top-1 gates, capacity dropping in priority order, the load-balancing loss, and
// finite-difference gradients.
#include <gtest/gtest.h>
#include <torch/types.h>

#include <cmath>

#include "exfusion/fusion/moe.h"
#include "exfusion/util/error.h"

namespace exfusion {
namespace {

constexpr double kExact = 1e-10;      // float64, same sums in another order
constexpr double kFiniteDiff = 1e-6;  // central differences, step 1e-6, float64

MoeMlp make_moe(int64_t n, int64_t k, double capacity_factor, int64_t dim = 6,
                int64_t hidden = 10) {
  torch::manual_seed(0);
  MoeMlp moe(dim, hidden, MoeOptions().num_experts(n).top_k(k).capacity_factor(capacity_factor));
  moe->to(torch::kFloat64);
  // Non-zero biases, so a dropped token (zero output) differs from an expert's output.
  const torch::NoGradGuard no_grad;
  moe->fc1->bias.normal_(0.0, 0.1);
  moe->fc2->bias.normal_(0.0, 0.1);
  return moe;
}

torch::Tensor expert(const MoeMlp& moe, int64_t e, const torch::Tensor& x) {
  const auto h = at::gelu(at::linear(x, moe->fc1->weight[e], moe->fc1->bias[e]));
  return at::linear(h, moe->fc2->weight[e], moe->fc2->bias[e]);
}

// y_t = Σ_j g_tj · expert_{e_tj}(x_t), gates renormalised over the k chosen when k > 1.
torch::Tensor direct(const MoeMlp& moe, const torch::Tensor& tokens, int64_t k) {
  const auto probs = torch::softmax(at::linear(tokens, moe->router->weight), -1);
  auto out = torch::zeros_like(tokens);
  for (int64_t t = 0; t < tokens.size(0); ++t) {
    const auto [gates, chosen] = probs[t].topk(k);
    const double total = k > 1 ? gates.sum().item<double>() : 1.0;
    for (int64_t j = 0; j < k; ++j) {
      out[t] += gates[j].item<double>() / total * expert(moe, chosen[j].item<int64_t>(), tokens[t]);
    }
  }
  return out;
}

TEST(Moe, TopTwoWithoutDroppingMatchesDirectComputation) {
  auto moe = make_moe(4, 2, 0.0);
  const auto x = torch::randn({3, 5, 6}, torch::kFloat64);
  const auto y = moe->forward(x);
  EXPECT_EQ(y.sizes(), x.sizes());
  EXPECT_TRUE(torch::allclose(y.view({15, 6}), direct(moe, x.view({15, 6}), 2), 0, kExact));
  EXPECT_EQ(moe->dropped_fraction().item<double>(), 0.0);
}

TEST(Moe, TopOneKeepsTheRawGate) {
  auto moe = make_moe(3, 1, 0.0);
  const auto x = torch::randn({2, 4, 6}, torch::kFloat64);
  EXPECT_TRUE(
      torch::allclose(moe->forward(x).view({8, 6}), direct(moe, x.view({8, 6}), 1), 0, kExact));
}

TEST(Moe, CapacityKeepsTheEarliestAssignmentsAndDropsTheRest) {
  auto moe = make_moe(4, 1, 1.0);
  {
    // Every token prefers expert 0: its logit is 5·Σx, the others' 0, and Σx > 0.
    const torch::NoGradGuard no_grad;
    moe->router->weight.zero_();
    moe->router->weight[0].fill_(5.0);
  }
  const auto tokens = torch::rand({1, 12, 6}, torch::kFloat64) + 0.1;
  const auto y = moe->forward(tokens).view({12, 6});
  // capacity = ceil(1.0 · 1 · 12 / 4) = 3: tokens 0..2 are served, 3..11 are dropped.
  const auto expected = direct(moe, tokens.view({12, 6}), 1);
  EXPECT_TRUE(torch::allclose(y.narrow(0, 0, 3), expected.narrow(0, 0, 3), 0, kExact));
  EXPECT_TRUE(torch::equal(y.narrow(0, 3, 9), torch::zeros({9, 6}, torch::kFloat64)));
  EXPECT_NEAR(moe->dropped_fraction().item<double>(), 0.75, 1e-7);
}

TEST(Moe, RoutingStatsAreOneTensorUpdatedInPlace) {
  // A captured CUDA graph writes to the tensors of the capture: the statistics the metrics
  // read must be those, not a new tensor per forward pass.
  auto moe = make_moe(4, 1, 1.0);
  {
    const torch::NoGradGuard no_grad;
    moe->router->weight.zero_();
    moe->router->weight[0].fill_(5.0);
  }
  moe->forward(torch::rand({1, 12, 6}, torch::kFloat64) + 0.1);
  const auto stats = moe->routing_stats();
  ASSERT_EQ(stats.sizes(), torch::IntArrayRef({2}));
  EXPECT_EQ(stats.scalar_type(), torch::kFloat32);
  EXPECT_NEAR(stats[0].item<double>(), 0.75, 1e-7);
  EXPECT_NEAR(stats[1].item<double>(), moe->auxiliary_loss().item<double>(), 1e-6);
  // 3 tokens, all for expert 0: capacity ceil(3 / 4) = 1, so 2 of 3 are dropped.
  moe->forward(torch::rand({1, 3, 6}, torch::kFloat64) + 0.1);
  EXPECT_EQ(moe->routing_stats().data_ptr(), stats.data_ptr());
  EXPECT_NEAR(stats[0].item<double>(), 2.0 / 3.0, 1e-7);
  EXPECT_NEAR(stats[1].item<double>(), moe->auxiliary_loss().item<double>(), 1e-6);
}

TEST(Moe, AuxiliaryLossIsCoefTimesNTimesFractionDotProbability) {
  auto moe = make_moe(4, 2, 0.0);
  const auto x = torch::randn({2, 8, 6}, torch::kFloat64);
  moe->forward(x);
  const auto probs = torch::softmax(at::linear(x.view({16, 6}), moe->router->weight), -1);
  const auto first = probs.argmax(-1);
  double expected = 0;
  for (int64_t e = 0; e < 4; ++e) {
    const double f = first.eq(e).sum().item<double>() / 16.0;
    expected += f * probs.select(1, e).mean().item<double>();
  }
  EXPECT_NEAR(moe->auxiliary_loss().item<double>(), 0.01 * 4 * expected, 1e-7);
}

TEST(Moe, GradientsMatchFiniteDifferences) {
  auto moe = make_moe(3, 2, 0.0, 4, 8);
  const auto x = torch::randn({1, 6, 4}, torch::kFloat64);
  const auto upstream = torch::randn({1, 6, 4}, torch::kFloat64);
  // The load-balancing loss is part of the objective, so its router gradient is checked too.
  const auto objective = [&] {
    const auto y = moe->forward(x);
    return (y * upstream).sum() + moe->auxiliary_loss();
  };
  objective().backward();
  const double eps = 1e-6;
  for (const auto* param : {&moe->router->weight, &moe->fc1->weight, &moe->fc2->bias}) {
    const auto grad = param->grad().clone();
    auto flat = param->detach().view({-1});
    for (int64_t i = 0; i < flat.numel(); i += std::max<int64_t>(1, flat.numel() / 7)) {
      const double original = flat[i].item<double>();
      flat[i] = original + eps;
      const double plus = objective().item<double>();
      flat[i] = original - eps;
      const double minus = objective().item<double>();
      flat[i] = original;
      EXPECT_NEAR(grad.view({-1})[i].item<double>(), (plus - minus) / (2 * eps), kFiniteDiff);
    }
  }
}

TEST(Moe, OptionsAreValidatedWithTheirConfigKeys) {
  const auto message = [](const MoeOptions& options) {
    try {
      options.validate({"my.yaml", "ffn"});
    } catch (const InputError& error) {
      return std::string(error.what());
    }
    return std::string();
  };
  EXPECT_NE(message(MoeOptions().num_experts(4).top_k(5)).find("ffn.top_k"), std::string::npos);
  EXPECT_NE(message(MoeOptions().capacity_factor(-1)).find("ffn.capacity_factor"),
            std::string::npos);
  EXPECT_NE(message(MoeOptions().aux_loss_coef(-0.5)).find("ffn.aux_loss_coef"), std::string::npos);
  EXPECT_NE(message(MoeOptions().num_experts(0)).find("ffn.num_experts"), std::string::npos);
  EXPECT_NE(message(MoeOptions().num_experts(0)).find("my.yaml"), std::string::npos);
  EXPECT_TRUE(message(MoeOptions()).empty());
}

TEST(Moe, HasNoDenseFormButALossAndMetrics) {
  auto moe = make_moe(2, 1, 0.0);
  EXPECT_EQ(dynamic_cast<HasDenseForm*>(moe.ptr().get()), nullptr);
  EXPECT_NE(dynamic_cast<AddsAuxiliaryLoss*>(moe.ptr().get()), nullptr);
  EXPECT_TRUE(moe->metrics().empty());  // before any forward pass
  moe->forward(torch::randn({3, 4, 6}, torch::kFloat64));
  EXPECT_TRUE(moe->metrics()["routing"].contains("dropped_fraction"));
}

}  // namespace
}  // namespace exfusion
