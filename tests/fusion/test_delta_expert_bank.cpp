// DeRS experts (fusion/delta_expert_bank.h): sparse deltas hold exactly K fixed, distinct
// positions per expert and start at zero; low-rank deltas start with B = 0; every expert is the
// base plus its delta; the fused weight equals the weighted sum of the N expert weights, and
// the gradients reach the base, the values (only at their positions) and A and B.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

#include "exfusion/fusion/delta_expert_bank.h"
#include "exfusion/models/model.h"

namespace exfusion {
namespace {

constexpr int64_t kExperts = 3, kIn = 12, kOut = 20;

DeltaExpertBank sparse_bank(double keep = 0.25) {
  torch::manual_seed(4);
  return DeltaExpertBank(
      DeltaExpertBankOptions(kExperts, kIn, kOut).form(DeltaForm::kSparse).keep_ratio(keep));
}

DeltaExpertBank low_rank_bank(int64_t rank = 3) {
  torch::manual_seed(4);
  return DeltaExpertBank(
      DeltaExpertBankOptions(kExperts, kIn, kOut).form(DeltaForm::kLowRank).rank(rank));
}

// Gives every delta value (and every bias) a non-zero value, as training would.
void perturb(DeltaExpertBank& bank) {
  torch::NoGradGuard no_grad;
  for (auto& parameter : bank->parameters()) parameter.add_(torch::randn_like(parameter) * 0.1);
}

TEST(DeltaExpertBank, SparseDeltasHoldKDistinctFixedPositionsPerExpertAndStartAtZero) {
  auto bank = sparse_bank(0.25);
  const int64_t k = std::llround(0.25 * kIn * kOut);
  EXPECT_EQ(bank->delta_size(), k);
  ASSERT_EQ(bank->delta_positions.sizes(), (std::vector<int64_t>{kExperts, k}));
  EXPECT_EQ(bank->delta_positions.scalar_type(), torch::kLong);
  for (int64_t e = 0; e < kExperts; ++e) {
    const auto row = bank->delta_positions[e];
    EXPECT_EQ(std::get<0>(at::_unique(row)).numel(), k) << "expert " << e;
    EXPECT_GE(row.min().item<int64_t>(), 0);
    EXPECT_LT(row.max().item<int64_t>(), kIn * kOut);
  }
  EXPECT_FALSE(torch::equal(bank->delta_positions[0], bank->delta_positions[1]));
  EXPECT_TRUE(torch::equal(bank->delta_values, torch::zeros({kExperts, k})));
  const auto [weights, biases] = bank->expert_weights();
  for (int64_t e = 0; e < kExperts; ++e) EXPECT_TRUE(torch::equal(weights[e], bank->base));
  // Positions are buffers: in the checkpoint, never stepped by the optimizer.
  EXPECT_EQ(bank->named_buffers().size(), 1U);
  EXPECT_EQ(count_parameters(*bank), kOut * kIn + kExperts * kOut + kExperts * k);
  EXPECT_EQ(count_stored_values(*bank), count_parameters(*bank) + kExperts * k);
}

TEST(DeltaExpertBank, EachSparseExpertIsTheBaseChangedAtItsPositionsOnly) {
  auto bank = sparse_bank();
  perturb(bank);
  const auto [weights, biases] = bank->expert_weights();
  for (int64_t e = 0; e < kExperts; ++e) {
    auto expected = bank->base.detach().clone().view({-1});
    const auto positions = bank->delta_positions[e];
    for (int64_t j = 0; j < positions.size(0); ++j) {
      expected[positions[j].item<int64_t>()] += bank->delta_values[e][j].item<float>();
    }
    // Bit for bit: each position gets exactly one float addition, as in the reference.
    EXPECT_TRUE(torch::equal(weights[e].reshape({-1}), expected)) << "expert " << e;
  }
  EXPECT_TRUE(torch::equal(biases, bank->bias));
}

TEST(DeltaExpertBank, LowRankDeltasStartWithBZeroAndAScaledByOneOverSqrtRank) {
  const int64_t rank = 4;
  auto bank = low_rank_bank(rank);
  EXPECT_TRUE(torch::equal(bank->delta_b, torch::zeros({kExperts, rank, kIn})));
  // 240 draws of normal(0, 1/√r): the sample std is within 25% of 0.5 far beyond 4 sigma
  // (its own std is about 0.5/√480 ≈ 4.6%).
  EXPECT_NEAR(bank->delta_a.std().item<double>(), 1.0 / std::sqrt(rank), 0.25 * 0.5);
  const auto [weights, biases] = bank->expert_weights();
  for (int64_t e = 0; e < kExperts; ++e) EXPECT_TRUE(torch::equal(weights[e], bank->base));
  EXPECT_EQ(count_parameters(*bank), kOut * kIn + kExperts * kOut + kExperts * rank * (kOut + kIn));
  EXPECT_EQ(count_stored_values(*bank), count_parameters(*bank));
}

std::vector<DeltaExpertBank> both_forms() { return {sparse_bank(), low_rank_bank()}; }

// Σ m_i (W_b + Δ_i) without the N weights equals the sum over the N expert weights: float32
// sums of N = 3 terms of size O(1), so 1e-5 is many ulps.
TEST(DeltaExpertBank, FusedWeightIsTheWeightedSumOfTheExpertWeights) {
  for (auto bank : both_forms()) {
    perturb(bank);
    const auto m = torch::tensor({0.5F, -0.2F, 0.9F});
    const auto [fused_weight, fused_bias] = bank->fuse(m);
    const auto [weights, biases] = bank->expert_weights();
    EXPECT_LE((fused_weight - (weights * m.view({-1, 1, 1})).sum(0)).abs().max().item<double>(),
              1e-5);
    EXPECT_LE((fused_bias - (biases * m.view({-1, 1})).sum(0)).abs().max().item<double>(), 1e-5);
  }
}

// The gradient of Σ G ⊙ W_i over the experts: the base gets Σ_i G_i, a sparse value G_i at its
// position, and A_i, B_i the low-rank products G_i B_iᵀ and A_iᵀ G_i (same float32 bound).
TEST(DeltaExpertBank, GradientsReachTheBaseAndTheDeltas) {
  for (auto bank : both_forms()) {
    perturb(bank);
    const auto g = torch::randn({kExperts, kOut, kIn});
    const auto [weights, biases] = bank->expert_weights();
    (weights * g).sum().backward();
    EXPECT_LE((bank->base.grad() - g.sum(0)).abs().max().item<double>(), 1e-5);
    if (bank->options.form() == DeltaForm::kSparse) {
      const auto expected = g.view({kExperts, -1}).gather(1, bank->delta_positions);
      EXPECT_TRUE(torch::equal(bank->delta_values.grad(), expected));
    } else {
      const auto a = bank->delta_a.detach(), b = bank->delta_b.detach();
      EXPECT_LE(
          (bank->delta_a.grad() - torch::bmm(g, b.transpose(1, 2))).abs().max().item<double>(),
          1e-5);
      EXPECT_LE(
          (bank->delta_b.grad() - torch::bmm(a.transpose(1, 2), g)).abs().max().item<double>(),
          1e-5);
    }
  }
}

}  // namespace
}  // namespace exfusion
