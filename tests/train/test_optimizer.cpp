// Fused AdamW against LibTorch's reference AdamW, AdamWScale against nanoT5's definition,
// weight-decay grouping, state round trips and gradient clipping against a direct computation of
// the norm.
#include <gtest/gtest.h>
#include <torch/optim/adamw.h>
#include <torch/types.h>
#include <torch/utils.h>

#include <cmath>
#include <limits>
#include <map>
#include <memory>
#include <set>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include "../support/tiny_models.h"
#include "exfusion/layers/capabilities.h"
#include "exfusion/train/optimizer.h"
#include "exfusion/util/error.h"

namespace exfusion {
namespace {

// float32 on CPU: both implementations do the same arithmetic, in a different order.
constexpr double kAdamTolerance = 1e-6;
constexpr double kLr = 1e-2;

// "w" (2-D, decayed), "b" (1-D, not decayed), "v" (2-D, decayed).
std::vector<torch::Tensor> make_params() {
  torch::manual_seed(0);
  return {torch::randn({4, 3}).requires_grad_(), torch::randn({3}).requires_grad_(),
          torch::randn({2, 5}).requires_grad_()};
}

void set_grads(const std::vector<torch::Tensor>& params, int seed) {
  torch::manual_seed(100 + seed);
  for (const auto& p : params) p.mutable_grad() = torch::randn_like(p);
}

FusedAdamW make_fused(const std::vector<torch::Tensor>& params, double wd) {
  return FusedAdamW(
      {{"decay", {"w", "v"}, {params[0], params[2]}, wd}, {"no_decay", {"b"}, {params[1]}, 0.0}},
      AdamWOptions{kLr, 0.9, 0.999, 1e-8, wd});
}

std::map<std::string, torch::Tensor> snapshot(const FusedAdamW& optimizer) {
  std::map<std::string, torch::Tensor> out;
  for (const auto& [name, tensor] : optimizer.state()) out[name] = tensor.clone();
  return out;
}

std::string load_error(FusedAdamW& optimizer, const std::map<std::string, torch::Tensor>& state) {
  try {
    optimizer.load_state(state);
  } catch (const InputError& e) {
    return e.what();
  }
  return "no error";
}

TEST(FusedAdamW, MatchesLibTorchAdamW) {
  const double wd = 0.05;
  auto ours = make_params(), reference = make_params();
  auto fused = make_fused(ours, wd);
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(std::vector<torch::Tensor>{reference[0], reference[2]},
                      std::make_unique<torch::optim::AdamWOptions>(
                          torch::optim::AdamWOptions(kLr).weight_decay(wd)));
  groups.emplace_back(std::vector<torch::Tensor>{reference[1]},
                      std::make_unique<torch::optim::AdamWOptions>(
                          torch::optim::AdamWOptions(kLr).weight_decay(0.0)));
  torch::optim::AdamW adamw(groups, torch::optim::AdamWOptions(kLr));
  for (int step = 0; step < 5; ++step) {
    const double lr = step < 2 ? kLr : 3e-3;
    fused.set_lr(lr);
    for (auto& group : adamw.param_groups()) group.options().set_lr(lr);
    set_grads(ours, step);
    set_grads(reference, step);
    if (step == 3) {
      // A parameter that gets no gradient for a step: the kernel's lists must be rebuilt.
      ours[2].mutable_grad().reset();
      reference[2].mutable_grad().reset();
    }
    fused.step();
    adamw.step();
    for (size_t i = 0; i < ours.size(); ++i) {
      EXPECT_LE((ours[i] - reference[i]).abs().max().item<double>(), kAdamTolerance)
          << "param " << i << " after step " << step;
    }
  }
  EXPECT_EQ(fused.steps_taken(), 5);
  EXPECT_DOUBLE_EQ(fused.lr(), 3e-3);
  EXPECT_EQ(snapshot(fused).at("v.step").item<float>(), 4.0f);
  EXPECT_EQ(snapshot(fused).at("w.step").item<float>(), 5.0f);
}

TEST(FusedAdamW, DecaysOnlyTheDecayGroup) {
  const double wd = 0.5;
  auto params = make_params();
  auto fused = make_fused(params, wd);
  const auto w = params[0].detach().clone(), b = params[1].detach().clone();
  for (const auto& p : params) p.mutable_grad() = torch::zeros_like(p);
  fused.step();
  // A zero gradient makes the Adam term zero, which leaves only the decoupled decay.
  EXPECT_LE((params[0] - w * (1 - kLr * wd)).abs().max().item<double>(), 1e-7);
  EXPECT_TRUE(torch::equal(params[1], b));
}

TEST(FusedAdamW, ParametersWithoutGradAreUntouched) {
  auto params = make_params();
  auto fused = make_fused(params, 0.05);
  const auto b = params[1].detach().clone(), v = params[2].detach().clone();
  params[0].mutable_grad() = torch::ones_like(params[0]);
  fused.step();
  EXPECT_TRUE(torch::equal(params[1], b));
  EXPECT_TRUE(torch::equal(params[2], v));
  const auto state = snapshot(fused);
  EXPECT_EQ(state.size(), 9u);
  EXPECT_EQ(state.at("b.step").item<float>(), 0.0f);
  EXPECT_EQ(state.at("b.exp_avg").abs().sum().item<float>(), 0.0f);
}

TEST(FusedAdamW, ZeroGradDropsGradients) {
  auto params = make_params();
  auto fused = make_fused(params, 0.05);
  set_grads(params, 0);
  fused.step();
  fused.zero_grad();
  for (const auto& p : params) EXPECT_FALSE(p.grad().defined());
}

TEST(FusedAdamW, StateRoundTripContinuesIdentically) {
  auto a = make_params(), b = make_params();
  auto uninterrupted = make_fused(a, 0.05), saved_from = make_fused(b, 0.05);
  for (int step = 0; step < 3; ++step) {
    set_grads(a, step);
    set_grads(b, step);
    uninterrupted.step();
    saved_from.step();
  }
  auto restored = make_fused(b, 0.05);
  restored.load_state(snapshot(saved_from));
  EXPECT_EQ(restored.steps_taken(), 3);
  for (int step = 3; step < 5; ++step) {
    set_grads(a, step);
    set_grads(b, step);
    uninterrupted.step();
    restored.step();
  }
  for (size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(torch::equal(a[i], b[i])) << "param " << i;
}

TEST(FusedAdamW, LoadStateNamesTheBadKey) {
  auto params = make_params();
  auto fused = make_fused(params, 0.05);
  set_grads(params, 0);
  fused.step();
  const auto good = snapshot(fused);

  auto missing = good;
  missing.erase("w.exp_avg_sq");
  EXPECT_NE(load_error(fused, missing).find("w.exp_avg_sq"), std::string::npos);

  auto wrong_shape = good;
  wrong_shape["b.exp_avg"] = torch::zeros({4});
  const auto message = load_error(fused, wrong_shape);
  EXPECT_NE(message.find("b.exp_avg"), std::string::npos) << message;
  EXPECT_NE(message.find("[4]"), std::string::npos) << message;

  // Each further bad entry: its key and what was expected.
  const std::vector<std::tuple<std::string, torch::Tensor, std::string>> bad = {
      {"w.exp_avg", torch::zeros_like(good.at("w.exp_avg"), torch::kInt32), "floating-point"},
      {"w.step", torch::full({}, -1.f), "whole number of steps"},
      {"w.step", torch::full({}, 2.5f), "whole number of steps"},
      {"w.step", torch::full({}, std::numeric_limits<float>::infinity()), "whole number"},
      {"w.step", torch::full({}, 1e30f), "2^24"},
      {"w.exp_avg", torch::full_like(good.at("w.exp_avg"), NAN), "non-finite"},
      {"w.exp_avg_sq", torch::full_like(good.at("w.exp_avg_sq"), -1.f), "negative or NaN"},
      {"w.exp_avg_sq", torch::full_like(good.at("w.exp_avg_sq"), NAN), "negative or NaN"},
      {"u.exp_avg", torch::zeros({2}), "unknown entry 'u.exp_avg'"}};
  for (const auto& [key, value, expected] : bad) {
    auto forged = good;
    forged[key] = value;
    const auto error = load_error(fused, forged);
    EXPECT_NE(error.find(key), std::string::npos) << error;
    EXPECT_NE(error.find(expected), std::string::npos) << error;
  }

  // A failed load changes nothing.
  const auto after = snapshot(fused);
  for (const auto& [name, tensor] : good) EXPECT_TRUE(torch::equal(after.at(name), tensor)) << name;
}

TEST(SplitWeightDecay, ExemptNamesGetNoneInTheGivenOrder) {
  const auto param = [](const std::vector<int64_t>& shape) {
    return torch::zeros(shape, torch::requires_grad());
  };
  const std::vector<std::pair<std::string, torch::Tensor>> named = {
      {"blocks.0.attn.qkv.weight", param({6, 2})},   {"blocks.0.norm1.weight", param({2})},
      {"blocks.0.attn.qkv.bias", param({6})},        {"blocks.0.mlp.fc1.bias", param({4, 3})},
      {"blocks.0.mlp.fc1.weight", param({4, 3, 2})}, {"frozen.weight", torch::zeros({2, 2})}};
  const auto groups = split_weight_decay(
      named, 0.05, {"blocks.0.norm1.weight", "blocks.0.attn.qkv.bias", "blocks.0.mlp.fc1.bias"});
  ASSERT_EQ(groups.size(), 2u);
  EXPECT_EQ(groups[0].name, "decay");
  EXPECT_EQ(groups[0].param_names,
            (std::vector<std::string>{"blocks.0.attn.qkv.weight", "blocks.0.mlp.fc1.weight"}));
  EXPECT_DOUBLE_EQ(groups[0].weight_decay, 0.05);
  EXPECT_EQ(groups[1].name, "no_decay");
  EXPECT_EQ(groups[1].param_names,
            (std::vector<std::string>{"blocks.0.norm1.weight", "blocks.0.attn.qkv.bias",
                                      "blocks.0.mlp.fc1.bias"}));
  EXPECT_DOUBLE_EQ(groups[1].weight_decay, 0.0);
  EXPECT_EQ(groups[1].params.size(), groups[1].param_names.size());
  EXPECT_EQ(split_weight_decay(named, 0.05, {})[0].param_names.size(), 5u);
}

// The modules' declarations give exactly what timm's rule gives a ViT (no decay on every
// tensor of at most one dimension, on biases stacked per expert, on the class token and the
// position embedding) and ExFusion's fusion weights, for every FFN kind: the groups of every
// run so far are unchanged.
TEST(SplitWeightDecay, ModulesDeclareWhatTimmsRuleExempts) {
  for (const auto* kind : {"dense", "exfusion", "moe", "ders-moe", "ders-exfusion"}) {
    for (const auto variant : {FusionVariant::kLearned, FusionVariant::kMemoryBank}) {
      VisionTransformer model(testing::tiny_vit(kind, variant));
      std::set<std::string> by_rule;
      for (const auto& item : model->named_parameters()) {
        const auto& name = item.key();
        const auto ends_with = [&](const std::string& suffix) {
          return name.size() >= suffix.size() &&
                 name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
        };
        if (item.value().dim() <= 1 || ends_with("bias") || ends_with("cls_token") ||
            ends_with("pos_embed") || name.find(".fusion.weights") != std::string::npos) {
          by_rule.insert(name);
        }
      }
      EXPECT_EQ(parameters_exempt_from_weight_decay(*model), by_rule)
          << kind << " " << to_string(variant);
    }
  }
}

TEST(ClipGradNorm, ScalesToTheGlobalNorm) {
  auto params = make_params();
  set_grads(params, 0);
  double squares = 0;
  for (const auto& p : params) squares += p.grad().pow(2).sum().item<double>();
  const double expected_norm = std::sqrt(squares);
  const double max_norm = expected_norm / 4;
  std::vector<torch::Tensor> before;
  before.reserve(params.size());
  for (const auto& p : params) before.push_back(p.grad().clone());

  EXPECT_NEAR(clip_grad_norm(params, max_norm), expected_norm, 1e-5);
  const double coefficient = max_norm / (expected_norm + 1e-6);
  for (size_t i = 0; i < params.size(); ++i) {
    EXPECT_TRUE(torch::allclose(params[i].grad(), before[i] * coefficient, 1e-6, 1e-7));
  }
  double clipped = 0;
  for (const auto& p : params) clipped += p.grad().pow(2).sum().item<double>();
  EXPECT_NEAR(std::sqrt(clipped), max_norm, 1e-5);
}

TEST(ClipGradNorm, LeavesSmallGradientsAlone) {
  auto params = make_params();
  set_grads(params, 1);
  params[1].mutable_grad().reset();
  const auto before = params[0].grad().clone();
  const double norm = clip_grad_norm(params, 1e6);
  EXPECT_NEAR(
      norm, std::hypot(before.norm().item<double>(), params[2].grad().norm().item<double>()), 1e-5);
  EXPECT_TRUE(torch::equal(params[0].grad(), before));
  EXPECT_FALSE(params[1].grad().defined());
  EXPECT_EQ(clip_grad_norm_async(params, 1e6).item<double>(), norm);
  EXPECT_TRUE(torch::equal(params[0].grad(), before));
  EXPECT_EQ(clip_grad_norm({torch::zeros({2}, torch::requires_grad())}, 1.0), 0.0);
}

TEST(ClipGradNorm, AsyncGivesTheSameGradients) {
  auto sync = make_params(), async = make_params();
  set_grads(sync, 2);
  set_grads(async, 2);
  const double norm = clip_grad_norm(sync, 0.5);
  const auto async_norm = clip_grad_norm_async(async, 0.5);
  EXPECT_EQ(async_norm.dim(), 0);
  EXPECT_EQ(async_norm.scalar_type(), torch::kFloat32);
  EXPECT_NEAR(async_norm.item<double>(), norm, 1e-6);
  for (size_t i = 0; i < sync.size(); ++i) {
    EXPECT_TRUE(torch::allclose(sync[i].grad(), async[i].grad(), 1e-6, 1e-7)) << "param " << i;
  }
}

// A factored expert gradient (m ⊗ G) is clipped and stepped exactly as the same gradient
// materialised on the parameter.
TEST(FusedAdamW, FactoredGradientClipsAndStepsLikeTheMaterialisedOne) {
  torch::manual_seed(3);
  const auto experts = torch::randn({3, 4, 5});
  const auto other = torch::randn({6});
  const auto g = torch::randn({4, 5});
  const auto m = torch::tensor({0.2f, 0.3f, 0.5f});
  const auto other_grad = torch::randn({6});

  auto factored_experts = experts.clone().requires_grad_();
  auto factored_other = other.clone().requires_grad_();
  FusedAdamW factored({{"decay", {"bank", "other"}, {factored_experts, factored_other}, 0.05}},
                      AdamWOptions{kLr, 0.9, 0.999, 1e-8, 0.05});
  auto sink = std::make_shared<FactoredGradient>();
  factored.set_factored_gradient("bank", sink);
  EXPECT_THROW(factored.set_factored_gradient("missing", sink), std::invalid_argument);

  auto plain_experts = experts.clone().requires_grad_();
  auto plain_other = other.clone().requires_grad_();
  FusedAdamW plain({{"decay", {"bank", "other"}, {plain_experts, plain_other}, 0.05}},
                   AdamWOptions{kLr, 0.9, 0.999, 1e-8, 0.05});

  for (int step = 0; step < 2; ++step) {
    sink->grad = g * (step + 1);
    sink->coeffs = m;
    factored_other.mutable_grad() = other_grad.clone();
    plain_experts.mutable_grad() = at::outer(m, (g * (step + 1)).reshape(-1)).view({3, 4, 5});
    plain_other.mutable_grad() = other_grad.clone();
    const double norm_factored = factored.clip_grad_norm_async(0.1).item<double>();
    const double norm_plain = clip_grad_norm({plain_experts, plain_other}, 0.1);
    EXPECT_NEAR(norm_factored, norm_plain, 1e-5);
    EXPECT_TRUE(torch::allclose(sink->materialize(experts), plain_experts.grad(), 1e-6, 1e-7));
    factored.step();
    plain.step();
    EXPECT_FALSE(sink->pending()) << "the step consumes the factored gradient";
    factored.zero_grad();
    plain.zero_grad();
  }
  EXPECT_TRUE(torch::allclose(factored_experts, plain_experts, 1e-6, kAdamTolerance));
  EXPECT_TRUE(torch::allclose(factored_other, plain_other, 1e-6, kAdamTolerance));
  const auto a = snapshot(factored), b = snapshot(plain);
  EXPECT_TRUE(torch::allclose(a.at("bank.exp_avg"), b.at("bank.exp_avg"), 1e-6, 1e-8));
  EXPECT_TRUE(torch::allclose(a.at("bank.exp_avg_sq"), b.at("bank.exp_avg_sq"), 1e-6, 1e-10));
  EXPECT_EQ(a.at("bank.step").item<float>(), 2.0f);
}

// Gradient accumulation can leave a bank both a factored gradient (its first backward pass)
// and an ordinary one (the later passes): clipping and the step see their sum.
TEST(FusedAdamW, BankWithFactoredAndOrdinaryGradientsClipsAndStepsTheirSum) {
  torch::manual_seed(4);
  const auto experts = torch::randn({3, 4, 5});
  const auto g = torch::randn({4, 5});
  const auto m = torch::tensor({0.6f, -0.3f, 0.7f});
  const auto ordinary = torch::randn({3, 4, 5});

  auto mixed_experts = experts.clone().requires_grad_();
  FusedAdamW mixed({{"decay", {"bank"}, {mixed_experts}, 0.05}},
                   AdamWOptions{kLr, 0.9, 0.999, 1e-8, 0.05});
  auto sink = std::make_shared<FactoredGradient>();
  mixed.set_factored_gradient("bank", sink);
  sink->grad = g;
  sink->coeffs = m;
  mixed_experts.mutable_grad() = ordinary.clone();

  auto plain_experts = experts.clone().requires_grad_();
  FusedAdamW plain({{"decay", {"bank"}, {plain_experts}, 0.05}},
                   AdamWOptions{kLr, 0.9, 0.999, 1e-8, 0.05});
  plain_experts.mutable_grad() = ordinary + at::outer(m, g.reshape(-1)).view({3, 4, 5});

  // float32 sums of 60 terms in another order.
  const double norm_mixed = mixed.clip_grad_norm_async(0.5).item<double>();
  const double norm_plain = plain.clip_grad_norm_async(0.5).item<double>();
  EXPECT_NEAR(norm_mixed, norm_plain, 1e-5);
  EXPECT_GT(norm_plain, 0.5) << "the test must clip";
  EXPECT_TRUE(torch::allclose(mixed_experts.grad(), plain_experts.grad(), 1e-6, 1e-7));
  mixed.step();
  plain.step();
  EXPECT_FALSE(sink->pending());
  EXPECT_TRUE(torch::allclose(mixed_experts, plain_experts, 1e-6, kAdamTolerance));
}

}  // namespace
}  // namespace exfusion

namespace exfusion {
namespace {

// nanoT5's AdamWScale for one parameter, element by element in double precision, from its
// definition (Hugging Face's AdamW with the step size times max(1e-3, RMS(p))).
struct AdamWScaleReference {
  std::vector<double> p, m, v;
  int64_t step = 0;
  void update(const std::vector<double>& grad, double lr, double wd) {
    ++step;
    double squares = 0;
    for (const double value : p) squares += value * value;
    const double rms = std::sqrt(squares / static_cast<double>(p.size()));
    const double step_size = lr * std::sqrt(1 - std::pow(0.999, step)) /
                             (1 - std::pow(0.9, static_cast<double>(step))) * std::max(1e-3, rms);
    for (size_t i = 0; i < p.size(); ++i) {
      m[i] = 0.9 * m[i] + 0.1 * grad[i];
      v[i] = 0.999 * v[i] + 0.001 * grad[i] * grad[i];
      p[i] -= step_size * m[i] / (std::sqrt(v[i]) + 1e-6);
      p[i] -= lr * wd * p[i];
    }
  }
};

std::vector<double> values_of(const torch::Tensor& t) {
  const auto flat = t.detach().to(torch::kFloat64).contiguous().flatten();
  return {flat.data_ptr<double>(), flat.data_ptr<double>() + flat.numel()};
}

TEST(FusedAdamW, AdamWScaleMatchesNanoT5sDefinition) {
  const double wd = 0.1;
  auto params = make_params();
  params[1].detach().mul_(1e-5);  // an RMS below 1e-3: its step is lr · 1e-3-scaled
  FusedAdamW optimizer(
      {{"decay", {"w", "v"}, {params[0], params[2]}, wd}, {"no_decay", {"b"}, {params[1]}, 0.0}},
      AdamWOptions{kLr, 0.9, 0.999, 1e-6, wd}, UpdateRule::kAdamWScale);
  std::vector<AdamWScaleReference> reference;
  for (const auto& p : params) {
    const auto values = values_of(p);
    reference.push_back(
        {values, std::vector<double>(values.size()), std::vector<double>(values.size())});
  }
  const double decay[] = {wd, 0.0, wd};
  for (int step = 0; step < 4; ++step) {
    const double lr = step < 2 ? kLr : 3e-3;
    optimizer.set_lr(lr);
    set_grads(params, step);
    for (size_t i = 0; i < params.size(); ++i) {
      reference[i].update(values_of(params[i].grad()), lr, decay[i]);
    }
    optimizer.step();
    for (size_t i = 0; i < params.size(); ++i) {
      const auto expected = torch::tensor(reference[i].p, torch::kFloat64);
      // float32 parameters against a double reference: a few ulps of values near 1.
      EXPECT_LE(
          (params[i].detach().to(torch::kFloat64).flatten() - expected).abs().max().item<double>(),
          1e-6)
          << "param " << i << " after step " << step;
    }
  }
  EXPECT_EQ(optimizer.rule(), UpdateRule::kAdamWScale);
  EXPECT_EQ(snapshot(optimizer).at("b.step").item<float>(), 4.0f);
}

}  // namespace
}  // namespace exfusion
