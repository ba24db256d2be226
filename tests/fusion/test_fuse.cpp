// Fusion math: the fused dense model must reproduce the trained multi-expert model's eval
// logits (fp32, max abs diff ≤ 1e-5) and have exactly the dense baseline's parameters.
#include <gtest/gtest.h>

#include "../support/tiny_models.h"
#include "exfusion/fusion/fuse.h"
#include "exfusion/layers/mlp.h"
#include "exfusion/util/error.h"

namespace exfusion {
namespace {

constexpr double kFuseTolerance = 1e-5;

// Moves the model away from its init so that fusion weights and banks are not trivial.
void train_a_little(VisionTransformer& model, FusionVariant variant) {
  model->train();
  torch::NoGradGuard no_grad;
  for (auto& item : model->named_parameters()) {
    if (item.key().find("fusion.weights") != std::string::npos) {
      item.value().copy_(torch::rand_like(item.value()));
    }
  }
  if (variant == FusionVariant::kMemoryBank) {
    for (int i = 0; i < 3; ++i) model->forward(torch::randn({4, 2, 8, 8}));
  }
}

struct FuseCase {
  FusionVariant variant;
  bool per_set_router;
  std::vector<int64_t> layers;
};

class FuseTest : public ::testing::TestWithParam<FuseCase> {};

TEST_P(FuseTest, FusedLogitsEqualTrainedEvalLogits) {
  torch::manual_seed(0);
  const auto& param = GetParam();
  auto options = testing::tiny_vit();
  options.ffn = FfnConfig::of(
      "exfusion", ExFusionOptions().variant(param.variant).router_per_set(param.per_set_router),
      param.layers);
  VisionTransformer model(options);
  train_a_little(model, param.variant);
  model->eval();

  auto fused = fuse_model(ModelConfig::of("vit", options), *model);
  fused->eval();
  const auto images = torch::randn({6, 2, 8, 8});
  torch::NoGradGuard no_grad;
  const auto diff = (model->forward(images) - fused->forward(images)).abs().max().item<double>();
  EXPECT_LE(diff, kFuseTolerance);

  VisionTransformer baseline(testing::tiny_vit());
  const auto expected = baseline->named_parameters();
  const auto actual = fused->named_parameters();
  ASSERT_EQ(actual.size(), expected.size());
  for (size_t i = 0; i < expected.size(); ++i) {
    EXPECT_EQ(actual[i].key(), expected[i].key());
    EXPECT_EQ(actual[i].value().sizes(), expected[i].value().sizes()) << expected[i].key();
  }
  EXPECT_EQ(count_parameters(*fused), count_parameters(*baseline));
  EXPECT_TRUE(fused->named_buffers().is_empty());
}

INSTANTIATE_TEST_SUITE_P(Variants, FuseTest,
                         ::testing::Values(FuseCase{FusionVariant::kStatic, false, {}},
                                           FuseCase{FusionVariant::kLearned, false, {}},
                                           FuseCase{FusionVariant::kMemoryBank, false, {}},
                                           FuseCase{FusionVariant::kMemoryBank, true, {}},
                                           FuseCase{FusionVariant::kMemoryBank, false, {1}}),
                         [](const auto& info) {
                           auto name = to_string(info.param.variant);
                           if (info.param.per_set_router) name += "_per_set_router";
                           if (!info.param.layers.empty()) name += "_some_layers";
                           return name;
                         });

TEST(Fuse, FusedWeightIsTheWeightedSumOfExperts) {
  torch::manual_seed(1);
  auto options = testing::tiny_vit("exfusion", FusionVariant::kLearned, 3);
  VisionTransformer model(options);
  auto ffn = std::dynamic_pointer_cast<ExFusionMlpImpl>(model->block(0)->mlp);
  ASSERT_TRUE(ffn);
  const auto m = torch::tensor({0.5f, -0.25f, 2.0f});
  {
    torch::NoGradGuard no_grad;
    ffn->fusion->named_parameters()["weights"].copy_(m);
  }
  auto fused = std::dynamic_pointer_cast<VisionTransformerImpl>(
      fuse_model(ModelConfig::of("vit", options), *model));
  ASSERT_TRUE(fused);
  auto dense = std::dynamic_pointer_cast<MlpImpl>(fused->block(0)->mlp);
  ASSERT_TRUE(dense);
  const auto& experts = ffn->fc1->weight;
  const auto expected = experts[0] * 0.5 - experts[1] * 0.25 + experts[2] * 2.0;
  EXPECT_LE((dense->fc1->weight - expected).abs().max().item<double>(), 1e-6);
}

TEST(Fuse, AMixtureOfExpertsHasNoDenseFormAndSaysWhere) {
  VisionTransformer model(testing::tiny_vit("moe"));
  try {
    fused_tensors(*model);
    FAIL() << "fused a mixture of experts";
  } catch (const InputError& error) {
    const std::string message = error.what();
    EXPECT_NE(message.find("blocks.0.mlp"), std::string::npos) << message;
    EXPECT_NE(message.find("no dense equivalent"), std::string::npos) << message;
  }
}

}  // namespace
}  // namespace exfusion
