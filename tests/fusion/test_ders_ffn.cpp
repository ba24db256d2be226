// The DeRS upcycling kinds (fusion/ders_ffn.h): from a dense ViT, ders-moe (any k, gates
// renormalised, no dropping) and ders-exfusion start exactly at the dense model's logits; a
// trained ders-exfusion fuses into a dense ViT with the unfused model's logits; the kinds are
// configured by name with their MoE/ExFusion keys and the delta's; their parameter counts
// are the base plus the deltas, a fraction of N full FFNs.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "../support/module_snapshot.h"
#include "../support/tiny_models.h"
#include "exfusion/fusion/ders_ffn.h"
#include "exfusion/io/module_tensors.h"
#include "exfusion/train/run_config.h"
#include "exfusion/upcycling/upcycle.h"
#include "exfusion/util/error.h"

namespace exfusion {
namespace {

using testing::tensors_of;

torch::Tensor logits(const ModelPtr& model) {
  torch::NoGradGuard no_grad;
  model->eval();
  torch::manual_seed(3);
  return model->forward(torch::randn({6, 2, 8, 8}));
}

// A dense tiny ViT with non-zero biases (as a trained one has) and `target` upcycled from it.
std::pair<ModelPtr, ModelPtr> upcycled_pair(const FfnConfig& ffn, const InitConfig& init = {}) {
  torch::manual_seed(1);
  auto dense_options = testing::tiny_vit();
  auto dense = dense_options.build(dense_options.ffn);
  {
    torch::NoGradGuard no_grad;
    for (auto& parameter : dense->named_parameters()) {
      if (parameter.key().find("bias") != std::string::npos) parameter.value().normal_(0, 0.1);
    }
  }
  auto target_options = testing::tiny_vit();
  target_options.ffn = ffn;
  auto target = target_options.build(ffn);
  upcycle_into(*target, tensors_of(*dense), init, "dense.safetensors");
  return {dense, target};
}

// Equal experts give the dense FFN up to the float32 rounding of a gate sum or of Σ m_i W_b:
// 1e-5 is a few hundred ulps of these O(1) logits.
constexpr double kDersSameLogits = 1e-5;

TEST(DersUpcycling, DersMoeStartsAtTheDenseLogitsForAnyTopK) {
  for (const auto form : {DeltaForm::kSparse, DeltaForm::kLowRank}) {
    for (const int64_t k : {1, 2, 4}) {
      DersMoeOptions options;
      options.moe.num_experts(4).top_k(k).capacity_factor(0).renormalize_top1(true);
      options.delta.form = form;
      const auto [dense, upcycled] = upcycled_pair(FfnConfig::of("ders-moe", options));
      EXPECT_LE((logits(dense) - logits(upcycled)).abs().max().item<double>(), kDersSameLogits)
          << "k = " << k;
    }
  }
}

// sw and dw, whose fusion weights start summing to 1. (mb starts from its bank M = 0, paper
// IV-D, so its first forward is not the dense FFN's, with full experts as with DeRS ones.)
TEST(DersUpcycling, DersExFusionStartsAtTheDenseLogits) {
  for (const auto variant : {FusionVariant::kStatic, FusionVariant::kLearned}) {
    DersExFusionOptions options;
    options.exfusion.variant(variant).num_experts(3);
    options.delta.form = DeltaForm::kLowRank;
    const auto [dense, upcycled] = upcycled_pair(FfnConfig::of("ders-exfusion", options));
    EXPECT_LE((logits(dense) - logits(upcycled)).abs().max().item<double>(), kDersSameLogits)
        << to_string(variant);
  }
}

TEST(DersUpcycling, OnlyCopyUpcyclesIntoDersExperts) {
  InitConfig drop;
  drop.method = UpcycleMethod::kDrop;
  try {
    upcycled_pair(FfnConfig::of("ders-moe", DersMoeOptions{}), drop);
    FAIL() << "drop-upcycled DeRS experts";
  } catch (const InputError& error) {
    EXPECT_NE(std::string(error.what()).find("upcycle them with init.method copy"),
              std::string::npos)
        << error.what();
  }
}

// A ders-exfusion model with trained-looking deltas and fusion weights: its dense form gives
// the unfused eval logits (float32 rounding of the fused sums; 1e-5 as above).
TEST(DersExFusion, FusesIntoADenseViTWithTheSameLogits) {
  for (const auto form : {DeltaForm::kSparse, DeltaForm::kLowRank}) {
    DersExFusionOptions options;
    options.exfusion.variant(FusionVariant::kLearned).num_experts(3);
    options.delta.form = form;
    options.delta.keep_ratio = 0.3;
    const auto [dense, model] = upcycled_pair(FfnConfig::of("ders-exfusion", options));
    {
      torch::NoGradGuard no_grad;
      for (auto& parameter : model->named_parameters()) {
        if (parameter.key().find("delta") != std::string::npos ||
            parameter.key().find("fusion") != std::string::npos) {
          parameter.value().add_(torch::randn_like(parameter.value()) * 0.1);
        }
      }
    }
    auto model_options = testing::tiny_vit();
    model_options.ffn = FfnConfig::of("ders-exfusion", options);
    const auto fused = fuse_model(ModelConfig::of("vit", model_options), *model);
    EXPECT_GT((logits(dense) - logits(model)).abs().max().item<double>(), 1e-3);
    EXPECT_LE((logits(fused) - logits(model)).abs().max().item<double>(), kDersSameLogits);
    EXPECT_EQ(count_parameters(*fused), count_parameters(*dense));
  }
}

// N = 8 sparse experts at keep 0.1 cost the base plus 10% per expert, not eight FFNs; the
// stored positions are counted apart.
TEST(DersMoe, CountsTheBaseAndTheDeltasNotNFullExperts) {
  DersMoeOptions options;
  options.moe.num_experts(8);
  options.delta.keep_ratio = 0.1;
  const int64_t dim = 16, hidden = 32, n = 8;
  DersMoeMlp ders(dim, hidden, options);
  MoeMlp full(dim, hidden, options.moe);
  const int64_t k_up = ders->fc1->delta_size(), k_down = ders->fc2->delta_size();
  EXPECT_EQ(k_up, std::llround(0.1 * dim * hidden));
  const int64_t expected = 2 * dim * hidden + n * (hidden + dim) + n * (k_up + k_down) + dim * n;
  EXPECT_EQ(count_parameters(*ders), expected);
  EXPECT_EQ(count_stored_values(*ders), expected + n * (k_up + k_down));
  EXPECT_LT(count_parameters(*ders), count_parameters(*full) / 3);
}

TEST(DersKinds, AreConfiguredByNameWithTheirMoeOrExFusionKeysAndTheDeltas) {
  auto config = default_run_config();
  apply_config(
      config,
      {{"ffn", {{"kind", "ders-moe"}, {"top_k", 1}, {"delta", "low-rank"}, {"delta_rank", 2}}}},
      "test.yaml");
  const auto* moe = config.ffn.as<DersMoeOptions>();
  ASSERT_NE(moe, nullptr);
  EXPECT_EQ(moe->moe.top_k(), 1);
  EXPECT_EQ(moe->delta.rank, 2);
  EXPECT_EQ(config.ffn.run_name(), "ders-moe-n4-k1-lowrank2");
  apply_config(config, {{"ffn", {{"kind", "ders-exfusion"}, {"variant", "dw"}}}}, "test.yaml");
  EXPECT_EQ(config.ffn.run_name(), "ders-exfusion-dw-n4-sparse0.1");
  // expert_init belongs to ExFusion's full experts, not to DeRS experts.
  EXPECT_THROW(apply_config(config, {{"ffn", {{"expert_init", "copy"}}}}, "test.yaml"), InputError);
  EXPECT_THROW(apply_config(config, {{"ffn", {{"delta_keep", 1.5}}}}, "test.yaml"), InputError);
}

}  // namespace
}  // namespace exfusion
