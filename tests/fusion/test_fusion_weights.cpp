// Behaviour of each fusion-weight variant (SPEC §1): sw stays 1/N; dw is learned; mb's bank
// follows M ← δM + (1−δ)w step by step, its router learns, and eval ignores the batch.
#include <gtest/gtest.h>

#include <torch/optim/sgd.h>

#include "../support/tiny_models.h"
#include "exfusion/fusion/exfusion_ffn.h"
#include "exfusion/util/error.h"

namespace exfusion {
namespace {

ExFusionMlp make_ffn(FusionVariant variant, int64_t experts = 4) {
  return ExFusionMlp(8, 16, ExFusionOptions().variant(variant).num_experts(experts));
}

void train_steps(ExFusionMlp& ffn, int steps) {
  torch::optim::SGD sgd(ffn->parameters(), torch::optim::SGDOptions(0.5));
  for (int i = 0; i < steps; ++i) {
    sgd.zero_grad();
    ffn->forward(torch::randn({3, 5, 8})).pow(2).mean().backward();
    sgd.step();
  }
}

TEST(StaticWeights, StayOneOverN) {
  torch::manual_seed(0);
  auto ffn = make_ffn(FusionVariant::kStatic, 5);
  EXPECT_TRUE(ffn->fusion->parameters().empty());
  train_steps(ffn, 3);
  const auto m = ffn->fusion->forward(torch::randn({2, 3, 8}));
  EXPECT_TRUE(torch::allclose(m, torch::full({5}, 0.2f)));
  EXPECT_TRUE(torch::allclose(ffn->fusion->final_weights(), torch::full({5}, 0.2f)));
}

TEST(LearnedWeights, ReceiveGradientsAndChange) {
  torch::manual_seed(0);
  auto ffn = make_ffn(FusionVariant::kLearned);
  auto weights = ffn->fusion->named_parameters()["weights"];
  EXPECT_TRUE(torch::allclose(weights, torch::full({4}, 0.25f)));
  ffn->forward(torch::randn({3, 5, 8})).pow(2).mean().backward();
  ASSERT_TRUE(weights.grad().defined());
  EXPECT_GT(weights.grad().abs().sum().item<double>(), 0.0);
  train_steps(ffn, 2);
  EXPECT_FALSE(torch::equal(weights, torch::full({4}, 0.25f)));
}

TEST(MemoryBankWeights, BankFollowsMomentumUpdateStepByStep) {
  torch::manual_seed(0);
  const double delta = 0.9;
  ExFusionMlp ffn(8, 16, ExFusionOptions().variant(FusionVariant::kMemoryBank).momentum(delta));
  auto bank_module = std::dynamic_pointer_cast<MemoryBankWeightsImpl>(ffn->fusion);
  ASSERT_TRUE(bank_module);
  auto expected = torch::zeros({4});
  EXPECT_TRUE(torch::equal(bank_module->bank, expected));
  for (int step = 0; step < 4; ++step) {
    const auto x = torch::randn({3, 5, 8}) * (step + 1);
    torch::Tensor w;
    {
      torch::NoGradGuard no_grad;
      const auto router = bank_module->router;
      w = torch::softmax(torch::matmul(x, router->weight.t()) + router->bias, -1)
              .reshape({-1, 4})
              .mean(0);
    }
    expected = expected * delta + w * (1.0 - delta);
    ffn->forward(x);
    EXPECT_LE((bank_module->bank - expected).abs().max().item<double>(), 1e-6) << "step " << step;
  }
}

TEST(MemoryBankWeights, RouterReceivesGradients) {
  torch::manual_seed(0);
  auto ffn = make_ffn(FusionVariant::kMemoryBank);
  auto bank_module = std::dynamic_pointer_cast<MemoryBankWeightsImpl>(ffn->fusion);
  ffn->forward(torch::randn({3, 5, 8})).pow(2).mean().backward();
  ASSERT_TRUE(bank_module->router->weight.grad().defined());
  EXPECT_GT(bank_module->router->weight.grad().abs().sum().item<double>(), 0.0);
  EXPECT_FALSE(bank_module->bank.requires_grad());
}

TEST(MemoryBankWeights, EvalUsesTheBankAndIgnoresTheBatch) {
  torch::manual_seed(0);
  VisionTransformer model(testing::tiny_vit("exfusion", FusionVariant::kMemoryBank));
  model->train();
  for (int i = 0; i < 3; ++i) model->forward(torch::randn({4, 2, 8, 8}));
  model->eval();
  const auto banks_before = model->named_buffers();
  std::vector<torch::Tensor> saved;
  for (const auto& b : banks_before) saved.push_back(b.value().clone());

  torch::NoGradGuard no_grad;
  const auto images = torch::randn({5, 2, 8, 8});
  const auto all = model->forward(images);
  const auto first = model->forward(images.narrow(0, 0, 1));
  const auto with_other =
      model->forward(torch::cat({images.narrow(0, 0, 1), torch::randn({7, 2, 8, 8}) * 3}));
  EXPECT_LE((all[0] - first[0]).abs().max().item<double>(), 1e-6);
  EXPECT_LE((all[0] - with_other[0]).abs().max().item<double>(), 1e-6);
  size_t i = 0;
  for (const auto& b : model->named_buffers()) EXPECT_TRUE(torch::equal(b.value(), saved[i++]));
}

TEST(MemoryBankWeights, BankInitAndPerSetRouter) {
  ExFusionMlp ffn(
      8, 16,
      ExFusionOptions().variant(FusionVariant::kMemoryBank).bank_init(0.25).router_per_set(true));
  ASSERT_TRUE(ffn->fusion_down);
  const auto buffers = ffn->named_buffers();
  EXPECT_TRUE(torch::equal(buffers["fusion.bank"], torch::full({4}, 0.25f)));
  EXPECT_TRUE(torch::equal(buffers["fusion_down.bank"], torch::full({4}, 0.25f)));
  const auto params = ffn->named_parameters();
  EXPECT_EQ(params["fusion_down.router.weight"].sizes(), (std::vector<int64_t>{4, 16}));
  ffn->forward(torch::randn({2, 3, 8}));
  EXPECT_FALSE(torch::equal(buffers["fusion_down.bank"], torch::full({4}, 0.25f)));
  EXPECT_FALSE(torch::equal(buffers["fusion.bank"], buffers["fusion_down.bank"]));
}

TEST(ExpertInit, IndependentCopyAndCopyNoise) {
  torch::manual_seed(0);
  auto make = [](ExpertInit init) {
    return ExFusionMlp(8, 16, ExFusionOptions().variant(FusionVariant::kStatic).expert_init(init));
  };
  const auto independent = make(ExpertInit::kIndependent)->fc1->weight;
  EXPECT_GT((independent[0] - independent[1]).abs().max().item<double>(), 1e-3);
  const auto copy = make(ExpertInit::kCopy)->fc1->weight;
  for (int i = 1; i < 4; ++i) EXPECT_TRUE(torch::equal(copy[0], copy[i]));
  EXPECT_GT(copy.std().item<double>(), 0.01);
  const auto noisy = make(ExpertInit::kCopyNoise)->fc1->weight;
  const auto spread = (noisy[0] - noisy[1]).abs().max().item<double>();
  EXPECT_GT(spread, 0.0);
  EXPECT_LT(spread, 0.02);
}

TEST(ExFusionOptions, RejectsBadExpertCountAndMomentum) {
  EXPECT_THROW(make_ffn(FusionVariant::kStatic, 0), InputError);
  for (double momentum : {-0.1, 1.0, 1.5}) {
    EXPECT_THROW(ExFusionMlp(8, 16, ExFusionOptions().momentum(momentum)), InputError);
  }
}

TEST(ExFusionOptions, VariantAndInitNamesAreTheConfigs) {
  EXPECT_EQ(to_string(FusionVariant::kStatic), "sw");
  EXPECT_EQ(to_string(FusionVariant::kLearned), "dw");
  EXPECT_EQ(to_string(FusionVariant::kMemoryBank), "mb");
  EXPECT_EQ(to_string(ExpertInit::kCopyNoise), "copy+noise");
  ExFusionOptions options;
  config::apply(options, {{"variant", "dw"}, {"expert_init", "copy"}}, {"", "ffn"});
  EXPECT_EQ(options.variant(), FusionVariant::kLearned);
  EXPECT_EQ(options.expert_init(), ExpertInit::kCopy);
  EXPECT_THROW(config::apply(options, {{"variant", "xw"}}, {"", "ffn"}), InputError);
  EXPECT_THROW(config::apply(options, {{"expert_init", "random"}}, {"", "ffn"}), InputError);
}

}  // namespace
}  // namespace exfusion
