// Upcycling a dense ViT (upcycling/upcycle.h): sparse upcycling reproduces the dense model's
// logits in a top-k MoE and in ExFusion-sw; Drop-Upcycling re-draws exactly ⌊r·H⌋ hidden units
// per expert, the same ones in W_u and W_d (or not, with independent_indices), from the
// replaced values' mean and std, and leaves every other value bit for bit.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <set>

#include "../support/module_snapshot.h"
#include "../support/tiny_models.h"
#include "exfusion/io/module_tensors.h"
#include "exfusion/upcycling/upcycle.h"
#include "exfusion/util/error.h"

namespace exfusion {
namespace {

VisionTransformerOptions wide_vit(const std::string& kind, int64_t experts = 4) {
  auto options = testing::tiny_vit(kind, FusionVariant::kStatic, experts);
  options.embed_dim = 32;
  options.num_heads = 4;
  options.mlp_ratio = 4.0;  // H = 128
  return options;
}

using testing::tensors_of;

double max_logit_difference(const ModelPtr& a, const ModelPtr& b) {
  torch::NoGradGuard no_grad;
  a->eval();
  b->eval();
  torch::manual_seed(3);
  const auto images = torch::randn({6, 2, 8, 8});
  return (a->forward(images) - b->forward(images)).abs().max().item<double>();
}

struct Upcycled {
  ModelPtr dense, upcycled;
  UpcycleReport report;
};

Upcycled upcycle(const VisionTransformerOptions& target, const InitConfig& init) {
  torch::manual_seed(1);
  auto dense_options = target;
  dense_options.ffn = FfnConfig{};
  Upcycled result{dense_options.build(dense_options.ffn), target.build(target.ffn), {}};
  // A trained model's biases are not the init's zeros: give them values to re-draw.
  {
    torch::NoGradGuard no_grad;
    for (auto& parameter : result.dense->named_parameters()) {
      if (parameter.key().find("bias") != std::string::npos) parameter.value().normal_(0, 0.1);
    }
  }
  result.report =
      upcycle_into(*result.upcycled, tensors_of(*result.dense), init, "dense.safetensors");
  return result;
}

// The exact logits of the dense model, up to float32 rounding of a gate sum or an average of
// N equal matrices: 1e-5 is a few hundred ulps of these O(1) logits.
constexpr double kSameLogits = 1e-5;

TEST(Upcycle, SparseUpcyclingIntoTopKMoeGivesTheDenseLogits) {
  for (const int64_t k : {1, 2, 4}) {
    auto target = wide_vit("moe");
    // k = 1 renormalised too (the gate becomes 1): what makes equal experts the dense FFN.
    target.ffn = FfnConfig::of(
        "moe", MoeOptions().num_experts(4).top_k(k).capacity_factor(0).renormalize_top1(true));
    const auto run = upcycle(target, InitConfig{});
    EXPECT_LE(max_logit_difference(run.dense, run.upcycled), kSameLogits) << "k = " << k;
    EXPECT_EQ(run.report.layers, 2);
    EXPECT_EQ(run.report.experts, 4);
  }
}

TEST(Upcycle, SparseUpcyclingIntoExFusionSwGivesTheDenseLogits) {
  auto target = wide_vit("exfusion", 3);
  const auto run = upcycle(target, InitConfig{});
  EXPECT_LE(max_logit_difference(run.dense, run.upcycled), kSameLogits);
  // The record of the dense weights (DeRS's base) is the dense FFNs themselves.
  const auto dense = tensors_of(*run.dense);
  ASSERT_EQ(run.report.dense_base.size(), 8u);  // 2 blocks × fc1/fc2 × weight/bias
  for (const auto& [name, tensor] : run.report.dense_base) {
    EXPECT_TRUE(torch::equal(tensor, dense.at(name))) << name;
  }
}

TEST(Upcycle, TheRouterStartsFromNormalWithStd002) {
  auto target = wide_vit("moe", 8);
  const auto run = upcycle(target, InitConfig{});
  const auto router = tensors_of(*run.upcycled).at("blocks.0.mlp.router.weight");
  // 256 draws: the sample std of N(0, 0.02) is within 25% of 0.02 with overwhelming odds.
  EXPECT_NEAR(router.std().item<double>(), 0.02, 0.005);
  EXPECT_NEAR(router.mean().item<double>(), 0.0, 0.005);
}

// Which of the `hidden` units of expert `e` differ from the dense FFN, as rows of fc1 and
// columns of fc2; asserts that everything else is bit-identical.
struct Changed {
  std::set<int64_t> up_rows, up_bias, down_columns;
};
Changed changed_units(const DenseTensors& dense, const DenseTensors& upcycled,
                      const std::string& block, int64_t e) {
  const auto up = upcycled.at(block + ".fc1.weight")[e], dense_up = dense.at(block + ".fc1.weight");
  const auto bias = upcycled.at(block + ".fc1.bias")[e], dense_bias = dense.at(block + ".fc1.bias");
  const auto down = upcycled.at(block + ".fc2.weight")[e];
  const auto dense_down = dense.at(block + ".fc2.weight");
  Changed changed;
  for (int64_t unit = 0; unit < up.size(0); ++unit) {
    const auto row_same = (up[unit] == dense_up[unit]);
    if (!row_same.all().item<bool>()) {
      changed.up_rows.insert(unit);
      EXPECT_FALSE(row_same.any().item<bool>()) << "a re-drawn row keeps a value: unit " << unit;
    }
    if (bias[unit].item<float>() != dense_bias[unit].item<float>()) changed.up_bias.insert(unit);
    const auto column_same = (down.select(1, unit) == dense_down.select(1, unit));
    if (!column_same.all().item<bool>()) {
      changed.down_columns.insert(unit);
      EXPECT_FALSE(column_same.any().item<bool>()) << "unit " << unit;
    }
  }
  EXPECT_TRUE(torch::equal(upcycled.at(block + ".fc2.bias")[e], dense.at(block + ".fc2.bias")));
  return changed;
}

TEST(Upcycle, DropUpcyclingRedrawsExactlyRTimesHUnitsPerExpert) {
  for (const bool independent : {false, true}) {
    InitConfig init;
    init.method = UpcycleMethod::kDrop;
    init.ratio = 0.3;  // ⌊0.3 · 128⌋ = 38
    init.independent_indices = independent;
    init.seed = 7;
    const auto run = upcycle(wide_vit("moe"), init);
    const auto dense = tensors_of(*run.dense), upcycled = tensors_of(*run.upcycled);
    std::set<std::set<int64_t>> subsets;
    for (const auto* block : {"blocks.0.mlp", "blocks.1.mlp"}) {
      for (int64_t e = 0; e < 4; ++e) {
        const auto changed = changed_units(dense, upcycled, block, e);
        EXPECT_EQ(changed.up_rows.size(), 38u) << block << " expert " << e;
        EXPECT_EQ(changed.down_columns.size(), 38u) << block << " expert " << e;
        EXPECT_EQ(changed.up_bias, changed.up_rows) << "the bias follows W_u's units";
        if (independent) {
          EXPECT_NE(changed.up_rows, changed.down_columns) << block << " expert " << e;
        } else {
          EXPECT_EQ(changed.up_rows, changed.down_columns) << block << " expert " << e;
        }
        subsets.insert(changed.up_rows);
      }
    }
    EXPECT_EQ(subsets.size(), 8u) << "every expert of every layer draws its own units";
    // Outside the FFNs everything is the dense model's.
    for (const auto& [name, tensor] : dense) {
      if (name.find(".mlp.") == std::string::npos) {
        EXPECT_TRUE(torch::equal(tensor, upcycled.at(name))) << name;
      }
    }
  }
}

TEST(Upcycle, DropUpcyclingDrawsFromTheReplacedValuesMeanAndStd) {
  InitConfig init;
  init.method = UpcycleMethod::kDrop;
  init.ratio = 0.5;
  // Dense weights far from the init's N(0, 0.02), so a draw from the wrong distribution shows.
  torch::manual_seed(1);
  auto target = wide_vit("moe");
  auto dense_options = target;
  dense_options.ffn = FfnConfig{};
  const auto dense_model = dense_options.build(dense_options.ffn);
  auto dense = tensors_of(*dense_model);
  dense["blocks.0.mlp.fc1.weight"] = torch::randn({128, 32}) * 0.5 + 1.5;
  const auto model = target.build(target.ffn);
  upcycle_into(*model, dense, init, "dense.safetensors");
  const auto upcycled = tensors_of(*model).at("blocks.0.mlp.fc1.weight");
  const auto& original = dense.at("blocks.0.mlp.fc1.weight");
  for (int64_t e = 0; e < 4; ++e) {
    const auto redrawn_rows = (upcycled[e] != original).all(1);
    const auto redrawn = upcycled[e].index({redrawn_rows});
    const auto replaced = original.index({redrawn_rows});
    ASSERT_EQ(redrawn.size(0), 64);
    // n = 64 × 32 draws: the sample mean is within 5 standard errors, the sample std within
    // 5 of its standard errors (≈ σ/√(2n)), with probability beyond 1 − 1e-6 each.
    const double n = 64.0 * 32.0, sigma = replaced.std(false).item<double>();
    EXPECT_NEAR(redrawn.mean().item<double>(), replaced.mean().item<double>(),
                5 * sigma / std::sqrt(n));
    EXPECT_NEAR(redrawn.std(false).item<double>(), sigma, 5 * sigma / std::sqrt(2 * n));
  }
}

TEST(Upcycle, NoiseUpcyclingAddsNoiseToTheSameShareOfUnits) {
  InitConfig init;
  init.method = UpcycleMethod::kNoise;
  init.ratio = 0.25;  // 32 of 128
  init.noise_std = 0.02;
  const auto run = upcycle(wide_vit("exfusion", 2), init);
  const auto dense = tensors_of(*run.dense), upcycled = tensors_of(*run.upcycled);
  const auto changed = changed_units(dense, upcycled, "blocks.1.mlp", 1);
  EXPECT_EQ(changed.up_rows.size(), 32u);
  const auto up = upcycled.at("blocks.1.mlp.fc1.weight")[1];
  const auto difference = up - dense.at("blocks.1.mlp.fc1.weight");
  const auto noised = difference.index({(difference != 0).all(1)});
  // 32 × 32 draws of N(0, 0.02): std within 5 standard errors.
  EXPECT_NEAR(noised.std(false).item<double>(), 0.02, 5 * 0.02 / std::sqrt(2 * 1024.0));
}

TEST(Upcycle, AnotherArchitectureNamesTheTensor) {
  auto target = wide_vit("moe");
  auto dense_options = target;
  dense_options.ffn = FfnConfig{};
  dense_options.depth = 1;
  const auto shallow = dense_options.build(dense_options.ffn);
  const auto model = target.build(target.ffn);
  try {
    upcycle_into(*model, tensors_of(*shallow), InitConfig{}, "dense.safetensors");
    ADD_FAILURE() << "upcycled a model of another depth";
  } catch (const InputError& error) {
    EXPECT_NE(
        std::string(error.what()).find("dense.safetensors: no tensor 'blocks.1.mlp.fc1.weight'"),
        std::string::npos)
        << error.what();
  }
  dense_options = target;
  dense_options.ffn = FfnConfig{};
  dense_options.mlp_ratio = 2.0;
  const auto narrow = dense_options.build(dense_options.ffn);
  try {
    upcycle_into(*model, tensors_of(*narrow), InitConfig{}, "dense.safetensors");
    ADD_FAILURE() << "upcycled a model of another width";
  } catch (const InputError& error) {
    EXPECT_NE(std::string(error.what())
                  .find("tensor 'blocks.0.mlp.fc1.weight' has shape [64, 32], the upcycled model "
                        "needs [128, 32]"),
              std::string::npos)
        << error.what();
  }
}

}  // namespace
}  // namespace exfusion
