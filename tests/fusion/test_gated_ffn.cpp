// Gated FFNs (T5 v1.1's gated GELU, Llama's SwiGLU) through every FFN kind: the dense form is
// fc2(act(gate x) ⊙ up x); ExFusion and DeRS-ExFusion over three expert sets fuse to it, and
// upcycling a gated dense FFN by copy gives MoE, ExFusion and both DeRS kinds its outputs;
// Drop-Upcycling re-draws the same hidden units in the gate's and up's rows and down's columns;
// DeRS compression finds all three sets. Everything goes through HasExpertSets, none by name.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <string>
#include <vector>

#include "../support/module_snapshot.h"
#include "exfusion/fusion/ders_ffn.h"
#include "exfusion/fusion/exfusion_ffn.h"
#include "exfusion/fusion/moe.h"
#include "exfusion/io/module_tensors.h"
#include "exfusion/layers/mlp.h"
#include "exfusion/models/model.h"
#include "exfusion/upcycling/ders_compression.h"
#include "exfusion/upcycling/upcycle.h"

namespace exfusion {
namespace {

constexpr int64_t kDim = 12, kHidden = 20;

// Fused or upcycled outputs against the dense FFN's: float32 sums of N terms of O(1) values, a
// few hundred ulps (the 1e-5).
constexpr double kSameOutputs = 1e-5;

// T5's names (wi_0 gate, wi_1 up, wo down) without biases, or timm's SwiGLU names with them.
FfnForm t5_form() {
  auto form = FfnForm::gated_form(Activation::kGeluTanh, /*bias=*/false);
  form.gate_name = "wi_0";
  form.up_name = "wi_1";
  form.down_name = "wo";
  return form;
}

FfnSite site_of(const FfnForm& form) { return {"mlp", 0, kDim, kHidden, 5, form}; }

// A model of one FFN at path "mlp", as a block holds it.
struct HolderImpl : torch::nn::Module {
  explicit HolderImpl(std::shared_ptr<FeedForwardImpl> ffn) {
    mlp = register_module("mlp", std::move(ffn));
  }
  torch::Tensor forward(const torch::Tensor& x) { return mlp->forward(x); }
  std::shared_ptr<FeedForwardImpl> mlp;
};
TORCH_MODULE(Holder);

Holder holder(const FfnConfig& config, const FfnForm& form) {
  return Holder(config.build(site_of(form)));
}

using testing::tensors_of;

// A dense gated FFN away from its init: biases (where there are any) not zero.
Holder trained_dense(const FfnForm& form) {
  auto dense = holder(FfnConfig{}, form);
  torch::NoGradGuard no_grad;
  for (auto& parameter : dense->parameters()) parameter.normal_(0, 0.3);
  return dense;
}

double max_difference(Holder& a, Holder& b) {
  torch::NoGradGuard no_grad;
  a->eval();
  b->eval();
  const auto x = torch::randn({3, 5, kDim});
  return (a->forward(x) - b->forward(x)).abs().max().item<double>();
}

std::vector<FfnForm> gated_forms() {
  return {FfnForm::gated_form(Activation::kSilu, /*bias=*/true), t5_form()};
}

std::string form_text(const FfnForm& form) {
  return form.gate_name + "/" + form.up_name + "/" + form.down_name + (form.bias ? "+bias" : "");
}

TEST(GatedFfn, DenseIsDownOfActivatedGateTimesUp) {
  torch::manual_seed(0);
  for (const auto activation :
       {Activation::kGelu, Activation::kGeluTanh, Activation::kSilu, Activation::kRelu}) {
    for (const bool bias : {true, false}) {
      Mlp mlp(kDim, kHidden, FfnForm::gated_form(activation, bias));
      const auto x = torch::randn({4, kDim});
      const auto b = [&](const Linear& layer) { return bias ? layer->bias : torch::Tensor(); };
      const auto gate = at::linear(x, mlp->gate->weight, b(mlp->gate));
      const auto up = at::linear(x, mlp->fc1->weight, b(mlp->fc1));
      torch::Tensor activated;
      switch (activation) {
        case Activation::kGelu:
          activated = at::gelu(gate);
          break;
        case Activation::kGeluTanh:
          activated =
              0.5 * gate * (1 + torch::tanh(0.7978845608028654 * (gate + 0.044715 * gate.pow(3))));
          break;
        case Activation::kSilu:
          activated = gate * torch::sigmoid(gate);
          break;
        case Activation::kRelu:
          activated = gate.clamp_min(0);
          break;
      }
      const auto expected = at::linear(activated * up, mlp->fc2->weight, b(mlp->fc2));
      EXPECT_TRUE(torch::allclose(mlp->forward(x), expected, 1e-5, 1e-6));
      std::vector<std::string> names;
      for (const auto& item : mlp->named_parameters()) names.push_back(item.key());
      const std::vector<std::string> with_bias{"fc1_g.weight", "fc1_g.bias", "fc1_x.weight",
                                               "fc1_x.bias",   "fc2.weight", "fc2.bias"};
      const std::vector<std::string> without{"fc1_g.weight", "fc1_x.weight", "fc2.weight"};
      EXPECT_EQ(names, bias ? with_bias : without);
    }
  }
}

TEST(GatedFfn, SiteCountsThreeMatrices) {
  const auto site = site_of(t5_form());
  EXPECT_EQ(site.dense_macs_per_token(), 3.0 * kDim * kHidden);
  EXPECT_EQ(site.dense_parameters(), 3.0 * kDim * kHidden);
  const auto with_bias = site_of(FfnForm::gated_form(Activation::kSilu, true));
  EXPECT_EQ(with_bias.dense_parameters(), 3.0 * kDim * kHidden + 2 * kHidden + kDim);
  Mlp mlp(kDim, kHidden, with_bias.form);
  EXPECT_EQ(static_cast<double>(count_parameters(*mlp)), with_bias.dense_parameters());
}

// Fusion weights away from the init: learned weights drawn, the memory bank updated.
void move_fusion_weights(Holder& model) {
  model->train();
  {
    torch::NoGradGuard no_grad;
    for (auto& item : model->named_parameters()) {
      if (item.key().find("fusion.weights") != std::string::npos) {
        item.value().copy_(torch::rand_like(item.value()));
      }
    }
  }
  torch::NoGradGuard no_grad;
  for (int i = 0; i < 3; ++i) model->forward(torch::randn({4, 5, kDim}));
}

// The dense FFN the model's dense form describes, in the same form.
Holder dense_form_of(Holder& model, const FfnForm& form) {
  auto dense = holder(FfnConfig{}, form);
  const auto& capable = dynamic_cast<const HasDenseForm&>(*model->mlp);
  torch::NoGradGuard no_grad;
  const auto params = dense->named_parameters();
  const auto tensors = capable.dense_tensors();
  EXPECT_EQ(tensors.size(), params.size());
  for (const auto& [name, tensor] : tensors) {
    const auto* target = params.find("mlp." + name);
    EXPECT_NE(target, nullptr) << name;
    if (target != nullptr) target->copy_(tensor);
  }
  return dense;
}

TEST(GatedFfn, ExFusionOverThreeSetsFusesToTheGatedDenseFfn) {
  for (const auto& form : gated_forms()) {
    for (const auto variant :
         {FusionVariant::kStatic, FusionVariant::kLearned, FusionVariant::kMemoryBank}) {
      for (const bool per_set : {false, true}) {
        if (per_set && variant != FusionVariant::kMemoryBank) continue;
        torch::manual_seed(1);
        auto model = holder(
            FfnConfig::of("exfusion", ExFusionOptions().variant(variant).router_per_set(per_set)),
            form);
        move_fusion_weights(model);
        auto dense = dense_form_of(model, form);
        EXPECT_LE(max_difference(model, dense), kSameOutputs)
            << form_text(form) << " " << to_string(variant) << (per_set ? " per-set" : "");
      }
    }
  }
}

TEST(GatedFfn, DersExFusionOverThreeSetsFusesToTheGatedDenseFfn) {
  for (const auto& form : gated_forms()) {
    for (const auto delta : {DeltaForm::kSparse, DeltaForm::kLowRank}) {
      torch::manual_seed(2);
      DersExFusionOptions options;
      options.exfusion.variant(FusionVariant::kLearned);
      options.delta.form = delta;
      auto model = holder(FfnConfig::of("ders-exfusion", options), form);
      {
        torch::NoGradGuard no_grad;
        for (auto& item : model->named_parameters()) {
          if (item.key().find("delta") != std::string::npos) item.value().normal_(0, 0.1);
        }
      }
      move_fusion_weights(model);
      auto dense = dense_form_of(model, form);
      EXPECT_LE(max_difference(model, dense), kSameOutputs) << form_text(form);
    }
  }
}

FfnConfig routed(const std::string& kind) {
  // Capacity for every assignment and the gate renormalised, so equal experts are the dense FFN.
  const auto moe = MoeOptions().num_experts(4).top_k(2).capacity_factor(0);
  if (kind == "moe") return FfnConfig::of(kind, moe);
  DersMoeOptions options;
  options.moe = moe;
  return FfnConfig::of(kind, options);
}

FfnConfig fused(const std::string& kind) {
  if (kind == "exfusion") {
    return FfnConfig::of(kind, ExFusionOptions().variant(FusionVariant::kStatic));
  }
  DersExFusionOptions options;
  options.exfusion.variant(FusionVariant::kStatic);
  return FfnConfig::of(kind, options);
}

TEST(GatedFfn, UpcyclingByCopyGivesTheDenseOutputsInEveryKind) {
  for (const auto& form : gated_forms()) {
    for (const auto& config :
         {routed("moe"), routed("ders-moe"), fused("exfusion"), fused("ders-exfusion")}) {
      torch::manual_seed(3);
      auto dense = trained_dense(form);
      auto model = holder(config, form);
      const auto report = upcycle_into(*model, tensors_of(*dense), InitConfig{}, "dense");
      EXPECT_EQ(report.layers, 1);
      EXPECT_EQ(report.experts, 4);
      // Every dense tensor recorded as the base DeRS compresses against.
      EXPECT_EQ(report.dense_base.size(), dense->parameters().size());
      EXPECT_LE(max_difference(model, dense), kSameOutputs)
          << config.kind << " " << form_text(form);
    }
  }
}

// Hidden units whose values differ from the dense layer's, per expert, along `axis`.
std::vector<int64_t> changed_units(const torch::Tensor& expert, const torch::Tensor& dense,
                                   int64_t axis) {
  const auto differs = (expert != dense).any(1 - axis);
  std::vector<int64_t> units;
  for (int64_t i = 0; i < differs.size(0); ++i) {
    if (differs[i].item<bool>()) units.push_back(i);
  }
  return units;
}

TEST(GatedFfn, DropUpcyclingRedrawsTheSameHiddenUnitsInGateUpAndDown) {
  const auto form = t5_form();
  for (const bool independent : {false, true}) {
    torch::manual_seed(4);
    auto dense = trained_dense(form);
    auto model = holder(fused("exfusion"), form);
    InitConfig init;
    init.method = UpcycleMethod::kDrop;
    init.ratio = 0.25;
    init.independent_indices = independent;
    upcycle_into(*model, tensors_of(*dense), init, "dense");
    const auto& ffn = dynamic_cast<const ExFusionMlpImpl&>(*model->mlp);
    const auto& dense_mlp = dynamic_cast<const MlpImpl&>(*dense->mlp);
    const auto dropped = static_cast<size_t>(kHidden / 4);
    for (int64_t e = 0; e < 4; ++e) {
      const auto gate = changed_units(ffn.gate->weight[e], dense_mlp.gate->weight, 0);
      const auto up = changed_units(ffn.fc1->weight[e], dense_mlp.fc1->weight, 0);
      const auto down = changed_units(ffn.fc2->weight[e], dense_mlp.fc2->weight, 1);
      EXPECT_EQ(gate.size(), dropped);
      EXPECT_EQ(up.size(), dropped);
      EXPECT_EQ(down.size(), dropped);
      if (!independent) {
        EXPECT_EQ(gate, up) << "expert " << e;
        EXPECT_EQ(gate, down) << "expert " << e;
      } else {
        // Three independent draws of 5 of 20 units agreeing by chance: C(20,5)^-2 < 1e-7.
        EXPECT_FALSE(gate == up && up == down) << "expert " << e;
      }
    }
  }
}

TEST(GatedFfn, DersCompressionFindsAllThreeExpertSets) {
  torch::manual_seed(5);
  auto model = holder(routed("moe"), t5_form());
  DersOptions options;
  const auto file = compress_model(*model, {}, options);
  std::vector<std::string> weights;
  for (const auto& bank : file.report["banks"]) weights.push_back(bank["weight"]);
  EXPECT_EQ(weights,
            (std::vector<std::string>{"mlp.wi_0.weight", "mlp.wi_1.weight", "mlp.wo.weight"}));
}

TEST(GatedFfn, KindsWithExpertsComeFromTheRegistry) {
  // Tests of this binary may register more kinds; the built-in ones are asked, not listed.
  const auto kinds = ffn_kinds_with_experts();
  for (const auto* kind : {"exfusion", "moe", "ders-moe", "ders-exfusion"}) {
    EXPECT_NE(std::find(kinds.begin(), kinds.end(), kind), kinds.end()) << kind;
  }
  EXPECT_EQ(std::find(kinds.begin(), kinds.end(), "dense"), kinds.end());
}

}  // namespace
}  // namespace exfusion
