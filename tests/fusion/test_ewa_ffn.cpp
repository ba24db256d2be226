// The EWA FFN kind (fusion/ewa_ffn.h): Eq. (6) against its sum written out, the experts' mean
// kept by it; the random uniform partition (every token in one group, sizes within one, uniform,
// the same over two ranks as in one process, the same after a generator restore); the partitioned
// forward against each token through its own expert; the trainer's averaging after each step;
// fused = trained; upcycling from a dense ViT; the options' checks.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <ATen/CPUGeneratorImpl.h>

#include <set>

#include "../support/module_snapshot.h"
#include "../support/tiny_models.h"
#include "../support/trajectory.h"
#include "exfusion/fusion/ewa_ffn.h"
#include "exfusion/layers/mlp.h"
#include "exfusion/train/trainer.h"
#include "exfusion/upcycling/upcycle.h"
#include "exfusion/util/error.h"

namespace exfusion {
namespace {

EwaOptions ewa_options(int64_t experts, double share_rate) {
  return EwaOptions().num_experts(experts).share_rate(share_rate);
}

TEST(EwaAveraging, EqualsEquationSixWrittenOut) {
  torch::manual_seed(1);
  const double beta = 0.3;
  const auto experts = torch::randn({3, 4, 5}, torch::kFloat64);
  auto averaged = experts.clone();
  average_experts_(averaged, beta);
  for (int64_t i = 0; i < 3; ++i) {
    auto expected = (1.0 - beta) * experts[i];
    for (int64_t j = 0; j < 3; ++j) {
      if (j != i) expected = expected + beta / 2.0 * experts[j];
    }
    // float64 arithmetic in two orders: a few ulps of O(1) values.
    EXPECT_LE((averaged[i] - expected).abs().max().item<double>(), 1e-12) << "expert " << i;
  }
  // float32 experts: the same map within float32 rounding of O(1) values.
  auto single = experts.to(torch::kFloat32);
  average_experts_(single, beta);
  EXPECT_LE((single.to(torch::kFloat64) - averaged).abs().max().item<double>(), 1e-6);
}

TEST(EwaAveraging, KeepsTheExpertsMeanAndPullsThemTogether) {
  torch::manual_seed(2);
  auto experts = torch::randn({4, 64, 32});
  const auto mean = experts.mean(0);
  const double before = expert_spread(experts);
  average_experts_(experts, 0.3);
  // The mean is a fixed point of Eq. (6): only float32 rounding of O(1) values moves it.
  EXPECT_LE((experts.mean(0) - mean).abs().max().item<double>(), 1e-6);
  // Each deviation from the mean shrinks by 1 − βN/(N − 1) = 0.6.
  EXPECT_NEAR(expert_spread(experts), 0.6 * before, 1e-6 * before);
  // β = 0 leaves every expert as it was; β = (N − 1)/N makes each the mean.
  const auto kept = experts.clone();
  average_experts_(experts, 0.0);
  EXPECT_TRUE(torch::equal(experts, kept));
  average_experts_(experts, 0.75);
  EXPECT_LE(expert_spread(experts), 1e-6);
}

TEST(ExpertSpread, IsTheRmsDistanceFromTheMeanOverTheMeansNorm) {
  const auto experts = torch::tensor({{1.0, 0.0}, {3.0, 0.0}});  // mean (2, 0)
  EXPECT_NEAR(expert_spread(experts), 1.0 / 2.0, 1e-12);
  EXPECT_EQ(expert_spread(torch::ones({3, 2, 2})), 0.0);
}

at::Generator partition_generator(uint64_t seed) {
  auto generator = at::detail::createCPUGenerator(seed);
  return generator;
}

TEST(TokenPartition, PutsEveryTokenInOneGroupOfEqualSize) {
  for (const auto scope : {PartitionScope::kBatch, PartitionScope::kSample}) {
    for (const auto& [samples, tokens, groups] : std::vector<std::tuple<int64_t, int64_t, int64_t>>{
             {8, 17, 4}, {6, 5, 3}, {3, 4, 4}, {2, 3, 8}}) {
      const auto partition =
          draw_token_partition(samples, tokens, groups, scope, {}, partition_generator(3));
      ASSERT_EQ(partition.group.numel(), samples * tokens);
      const auto group = partition.group.accessor<int64_t, 1>();
      const auto slot = partition.slot.accessor<int64_t, 1>();
      std::set<int64_t> slots;
      std::vector<int64_t> size(static_cast<size_t>(groups), 0);
      for (int64_t t = 0; t < samples * tokens; ++t) {
        ASSERT_GE(group[t], 0);
        ASSERT_LT(group[t], groups);
        ++size[static_cast<size_t>(group[t])];
        // Its dispatch row is its group's, and no other token's.
        EXPECT_EQ(slot[t] / partition.capacity, group[t]);
        EXPECT_TRUE(slots.insert(slot[t]).second) << "slot " << slot[t] << " twice";
      }
      // Batch: the sizes over all tokens differ by at most one. Sample: within each sample.
      if (scope == PartitionScope::kBatch) {
        const auto [low, high] = std::minmax_element(size.begin(), size.end());
        EXPECT_LE(*high - *low, 1) << samples << "×" << tokens << " into " << groups;
        EXPECT_EQ(partition.capacity, *high);
      } else {
        for (int64_t s = 0; s < samples; ++s) {
          std::vector<int64_t> own(static_cast<size_t>(groups), 0);
          for (int64_t t = 0; t < tokens; ++t) ++own[static_cast<size_t>(group[s * tokens + t])];
          const auto [low, high] = std::minmax_element(own.begin(), own.end());
          EXPECT_LE(*high - *low, 1) << "sample " << s;
        }
      }
    }
  }
}

TEST(TokenPartition, GivesEachTokenEachGroupEquallyOften) {
  // 12 tokens into 4 groups, 4000 draws: each (token, group) count is Binomial(4000, 1/4),
  // mean 1000, σ = √(4000 · 3/16) ≈ 27.4; 6σ leaves no room for a biased draw of 5 % or more.
  auto generator = partition_generator(4);
  auto counts = torch::zeros({12, 4}, torch::kLong);
  for (int i = 0; i < 4000; ++i) {
    const auto group = draw_token_partition(1, 12, 4, PartitionScope::kBatch, {}, generator).group;
    counts.index_put_({torch::arange(12), group}, counts.index({torch::arange(12), group}) + 1);
  }
  EXPECT_LE((counts - 1000).abs().max().item<int64_t>(), 6 * 27.4);
}

TEST(TokenPartition, OnTwoRanksIsTheOneProcessPartitionSplit) {
  for (const auto scope : {PartitionScope::kBatch, PartitionScope::kSample}) {
    auto one = partition_generator(5), rank0 = partition_generator(5),
         rank1 = partition_generator(5);
    for (int step = 0; step < 3; ++step) {
      const auto whole = draw_token_partition(8, 17, 4, scope, {}, one);
      const auto first = draw_token_partition(4, 17, 4, scope, {0, 2}, rank0);
      const auto second = draw_token_partition(4, 17, 4, scope, {1, 2}, rank1);
      EXPECT_TRUE(torch::equal(torch::cat({first.group, second.group}), whole.group))
          << to_string(scope) << " step " << step;
    }
    // The generators moved on alike: the next draws of every rank agree.
    EXPECT_TRUE(
        torch::equal(at::randperm(50, one, torch::kLong), at::randperm(50, rank1, torch::kLong)));
  }
}

TEST(TokenPartition, IsTheSameAfterTheGeneratorIsRestored) {
  auto generator = partition_generator(6);
  draw_token_partition(4, 9, 3, PartitionScope::kBatch, {}, generator);
  const auto saved = generator.get_state();
  const auto next = draw_token_partition(4, 9, 3, PartitionScope::kBatch, {}, generator);
  auto restored = partition_generator(99);
  restored.set_state(saved);
  EXPECT_TRUE(torch::equal(
      draw_token_partition(4, 9, 3, PartitionScope::kBatch, {}, restored).group, next.group));
}

// The ExFusion test's helpers give a tiny ViT; here one EWA FFN alone, with experts apart.
EwaMlp spread_ewa(FfnForm form = FfnForm::plain(), int64_t experts = 3) {
  torch::manual_seed(7);
  EwaMlp ffn(8, 12, ewa_options(experts, 0.3).expert_init(ExpertInit::kIndependent), form);
  torch::NoGradGuard no_grad;
  for (auto& parameter : ffn->parameters()) parameter.add_(torch::randn_like(parameter) * 0.1);
  return ffn;
}

// Each token through the expert its group names, one token at a time; a depthwise convolution
// (PVT v2's) over the whole grid of hidden units between, as the dense FFN has it.
torch::Tensor per_token_reference(const EwaMlpImpl& ffn, const torch::Tensor& x) {
  const auto tokens = x.reshape({-1, x.size(-1)});
  const auto group = ffn.last_partition().group;
  const auto expert_linear = [&](const ExpertBank& bank, int64_t t, const torch::Tensor& row) {
    const auto e = group[t].item<int64_t>();
    return torch::linear(row.unsqueeze(0), bank->weight[e],
                         bank->bias.defined() ? bank->bias[e] : torch::Tensor());
  };
  std::vector<torch::Tensor> up, gate;
  for (int64_t t = 0; t < tokens.size(0); ++t) {
    up.push_back(expert_linear(ffn.fc1, t, tokens[t]));
    if (ffn.gate) gate.push_back(expert_linear(ffn.gate, t, tokens[t]));
  }
  auto up_rows = torch::cat(up);
  if (ffn.dwconv) {
    auto shape = x.sizes().vec();
    shape.back() = up_rows.size(1);
    up_rows = ffn.dwconv->forward(up_rows.view(shape)).reshape({tokens.size(0), -1});
  }
  const auto hidden = ffn.form.gated ? activate(ffn.form.activation, torch::cat(gate)) * up_rows
                                     : activate(ffn.form.activation, up_rows);
  std::vector<torch::Tensor> rows;
  for (int64_t t = 0; t < tokens.size(0); ++t) {
    rows.push_back(expert_linear(ffn.fc2, t, hidden[t]));
  }
  return torch::cat(rows).view(x.sizes());
}

// A fake second rank for the partition's place in the global batch (no collective is needed).
class SecondOfTwoRanks : public CrossRankMean {
 public:
  void mean_(torch::Tensor& /*tensor*/) override {}
  int64_t rank() const override { return 1; }
  int64_t ranks() const override { return 2; }
};

TEST(EwaFfn, SendsEachTokenThroughItsGroupsExpert) {
  auto ffn = spread_ewa();
  ffn->train();
  const auto x = torch::randn({5, 7, 8});
  // float32 GEMMs in another order than one row at a time: a few ulps of O(1) outputs. (The
  // reference reads the partition the forward drew: the forward first.)
  const auto y = ffn->forward(x);
  EXPECT_LE((y - per_token_reference(*ffn, x)).abs().max().item<double>(), 1e-5);
  // As rank 1 of 2 its groups are unequal (the global batch's are equal): padding rows unread.
  const GlobalBatchScope scope(std::make_shared<SecondOfTwoRanks>());
  const auto on_rank_1 = ffn->forward(x);
  EXPECT_LE((on_rank_1 - per_token_reference(*ffn, x)).abs().max().item<double>(), 1e-5);
}

TEST(EwaFfn, SendsEachTokenThroughItsGroupsExpertInTheGatedAndConvolvedForms) {
  // Llama's gated SiLU FFN without biases, and PVT v2's with a 3 × 3 depthwise convolution over
  // a 4 × 4 grid of tokens; float32 rounding as above.
  auto convolved = FfnForm::plain();
  convolved.depthwise_kernel = 3;
  for (const auto& form : {FfnForm::gated_form(Activation::kSilu, false), convolved}) {
    auto ffn = spread_ewa(form);
    ffn->train();
    const auto x = torch::randn({3, 16, 8});
    const auto y = ffn->forward(x);
    EXPECT_LE((y - per_token_reference(*ffn, x)).abs().max().item<double>(), 1e-5)
        << (form.gated ? "gated" : "depthwise");
  }
}

TEST(EwaFfn, GivesEveryExpertTheGradientOfItsOwnTokens) {
  auto ffn = spread_ewa();
  ffn->train();
  const auto x = torch::randn({4, 6, 8});
  ffn->forward(x).pow(2).sum().backward();
  const auto group = ffn->last_partition().group;
  for (int64_t e = 0; e < 3; ++e) {
    // fc2's bias gradient is the sum of 2y over the expert's tokens alone.
    torch::NoGradGuard no_grad;
    const auto mask = (group == e).unsqueeze(1).to(torch::kFloat32);
    const auto y = per_token_reference(*ffn, x).reshape({-1, 8});
    EXPECT_LE((ffn->fc2->bias.grad()[e] - (2 * y * mask).sum(0)).abs().max().item<double>(), 1e-4)
        << "expert " << e;
  }
}

TEST(EwaFfn, EvaluatesAndFusesAsTheExpertsMean) {
  auto ffn = spread_ewa(FfnForm::plain(), 4);
  ffn->eval();
  const auto x = torch::randn({3, 5, 8});
  Mlp dense(8, 12);
  {
    torch::NoGradGuard no_grad;
    dense->fc1->weight.copy_(ffn->fc1->weight.mean(0));
    dense->fc1->bias.copy_(ffn->fc1->bias.mean(0));
    dense->fc2->weight.copy_(ffn->fc2->weight.mean(0));
    dense->fc2->bias.copy_(ffn->fc2->bias.mean(0));
  }
  EXPECT_LE((ffn->forward(x) - dense->forward(x)).abs().max().item<double>(), 1e-6);
  std::set<std::string> names;
  for (const auto& [name, tensor] : ffn->dense_tensors()) names.insert(name);
  EXPECT_EQ(names, (std::set<std::string>{"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"}));
}

torch::Tensor vit_logits(const ModelPtr& model) {
  torch::NoGradGuard no_grad;
  model->eval();
  torch::manual_seed(3);
  return model->forward(torch::randn({6, 2, 8, 8}));
}

TEST(EwaFfn, AViTFusesIntoADenseViTWithTheSameLogits) {
  auto options = testing::tiny_vit();
  options.ffn = FfnConfig::of("ewa", ewa_options(3, 0.3).expert_init(ExpertInit::kIndependent));
  torch::manual_seed(8);
  const auto model = options.build(options.ffn);
  const auto fused = fuse_model(ModelConfig::of("vit", options), *model);
  // The fused linear layers hold the same means; only GEMM rounding differs: 1e-5 of O(1) logits.
  EXPECT_LE((vit_logits(fused) - vit_logits(model)).abs().max().item<double>(), 1e-5);
  auto dense_options = testing::tiny_vit();
  EXPECT_EQ(count_parameters(*fused), count_parameters(*dense_options.build(dense_options.ffn)));
}

TEST(EwaFfn, UpcycledFromADenseViTStartsAtItsLogitsInTrainingToo) {
  torch::manual_seed(1);
  auto dense_options = testing::tiny_vit();
  const auto dense = dense_options.build(dense_options.ffn);
  auto options = testing::tiny_vit();
  options.ffn = FfnConfig::of("ewa", ewa_options(4, 0.3));
  const auto upcycled = options.build(options.ffn);
  upcycle_into(*upcycled, testing::tensors_of(*dense), {}, "dense.safetensors");
  EXPECT_LE((vit_logits(upcycled) - vit_logits(dense)).abs().max().item<double>(), 1e-5);
  // Equal copies: whichever group a token is in, it meets the dense FFN.
  torch::NoGradGuard no_grad;
  upcycled->train();
  dense->train();
  torch::manual_seed(4);
  const auto x = torch::randn({6, 2, 8, 8});
  EXPECT_LE((upcycled->forward(x) - dense->forward(x)).abs().max().item<double>(), 1e-5);
}

// A few trainer steps of a tiny EWA ViT; the spread of its first FFN's fc1 after them.
double spread_after_steps(double share_rate) {
  auto config = default_run_config();
  auto vit = testing::tiny_vit();
  vit.ffn = FfnConfig::of("ewa", ewa_options(4, share_rate));
  testing::use_vit(config, vit);
  config.train.precision = "fp32";
  torch::manual_seed(7);
  auto model = build_model(config.model, config.ffn);
  Trainer trainer(config.train, model, make_task(config), torch::kCPU);
  torch::manual_seed(11);
  for (int i = 0; i < 3; ++i) {
    trainer.step(Batch{torch::randn({6, 2, 8, 8}), torch::randint(0, 5, {6})});
  }
  double spread = -1.0;
  for_each_capable<EwaMlpImpl>(*model, [&](const std::string&, const EwaMlpImpl& ffn) {
    if (spread < 0) spread = expert_spread(ffn.fc1->weight);
  });
  return spread;
}

TEST(EwaFfn, TheTrainerAveragesTheExpertsAfterEveryStep) {
  // Copies at the start: only the groups' different gradients set them apart, and β = 3/4 makes
  // every expert the mean after each step; β = 0 leaves them apart.
  EXPECT_LE(spread_after_steps(0.75), 1e-6);
  EXPECT_GT(spread_after_steps(0.0), 1e-4);
}

TEST(EwaFfn, ACudaGraphIsRefusedNamingEwa) {
  auto config = default_run_config();
  auto vit = testing::tiny_vit();
  vit.ffn = FfnConfig::of("ewa", ewa_options(2, 0.3));
  testing::use_vit(config, vit);
  config.train.cuda_graph = true;
  auto model = build_model(config.model, config.ffn);
  try {
    Trainer trainer(config.train, model, make_task(config), torch::kCPU);
    FAIL() << "expected an InputError";
  } catch (const InputError& error) {
    EXPECT_NE(std::string(error.what()).find("EWA"), std::string::npos) << error.what();
    EXPECT_NE(std::string(error.what()).find("blocks.0.mlp"), std::string::npos) << error.what();
  }
}

TEST(EwaOptions, RefuseOneExpertAndAShareRateOutsideZeroToOne) {
  auto config = default_run_config();
  EXPECT_THROW(apply_config(config, {{"ffn", {{"kind", "ewa"}, {"num_experts", 1}}}}, "test"),
               InputError);
  EXPECT_THROW(apply_config(config, {{"ffn", {{"kind", "ewa"}, {"share_rate", 1.5}}}}, "test"),
               InputError);
  EXPECT_THROW(apply_config(config, {{"ffn", {{"kind", "ewa"}, {"partition", "image"}}}}, "test"),
               InputError);
  apply_config(config, {{"ffn", {{"kind", "ewa"}, {"partition", "sample"}}}}, "test");
  EXPECT_EQ(config.ffn.run_name(), "ewa-n4");
}

}  // namespace
}  // namespace exfusion
