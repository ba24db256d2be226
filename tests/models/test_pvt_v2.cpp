// PVT v2: the presets' parameters (timm's counts exactly) and multiply-adds (timm's within 3 %;
// b0's 0.566 G is the paper's "0.6 G" rounded); the module's tensors against
// dense_tensor_shapes(); ExFusion in every stage fused equals trained, with the FFN's depthwise
// convolution one shared layer; a routed MoE refused; upcycling by copy (the convolution taken
// from the dense model as it is) starts at the dense logits.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <vector>

#include "../support/module_snapshot.h"
#include "exfusion/fusion/ders_ffn.h"
#include "exfusion/fusion/exfusion_ffn.h"
#include "exfusion/fusion/moe.h"
#include "exfusion/io/module_tensors.h"
#include "exfusion/models/pvt_v2.h"
#include "exfusion/models/registry.h"
#include "exfusion/train/run_files.h"
#include "exfusion/upcycling/upcycle.h"
#include "exfusion/util/error.h"

namespace exfusion {
namespace {

// Fused against trained logits: float32 sums through a few blocks, far below a logit's O(1).
constexpr double kPvtV2SameLogits = 1e-5;

// 28 px: a 7 × 7 grid with keys reduced to 3 × 3, then 4 × 4.
PvtV2Options tiny_pvt_v2() {
  PvtV2Options options;
  options.img_size = 28;
  options.in_chans = 1;
  options.embed_dims = {8, 16};
  options.num_heads = {1, 2};
  options.mlp_ratios = {4, 2};
  options.depths = {2, 2};
  options.sr_ratios = {2, 1};
  options.num_classes = 5;
  return options;
}

std::shared_ptr<PvtV2Impl> build_pvt_v2(const PvtV2Options& options, const FfnConfig& ffn) {
  return std::dynamic_pointer_cast<PvtV2Impl>(options.build(ffn));
}

double pvt_v2_parameters(const PvtV2Options& options) {
  return dense_model_parameters(DeclaredModelOptions<PvtV2Options>(options));
}

// timm 1.0.31's counts (instantiated) and multiply-adds (its results table, GMACs at 224 px).
TEST(PvtV2, PresetsHaveTimmsParametersAndMultiplyAdds) {
  struct Published {
    const char* preset;
    double parameters, macs;
  };
  for (const auto& [preset, parameters, macs] :
       {Published{"pvt_v2_b0", 3666760, 0.57e9}, Published{"pvt_v2_b1", 14009000, 2.12e9},
        Published{"pvt_v2_b2", 25362856, 4.05e9}, Published{"pvt_v2_b3", 45238696, 6.92e9},
        Published{"pvt_v2_b4", 62556072, 10.14e9}, Published{"pvt_v2_b5", 81956008, 11.76e9}}) {
    PvtV2Options options;
    options.apply_preset(preset, {"test", "model"});
    options.validate();
    EXPECT_EQ(pvt_v2_parameters(options), parameters) << preset;
    const double counted = options.forward_flops_per_sample(FfnConfig{}) / 2;
    EXPECT_NEAR(counted / macs, 1.0, 0.03) << preset << ": " << counted;
    if (std::string(preset) == "pvt_v2_b0") {
      EXPECT_EQ(std::round(counted / 1e8) / 10, 0.6);  // the paper's "0.6 G"
    }
  }
}

TEST(PvtV2, ModuleTensorsAreTheDeclaredShapes) {
  const auto options = tiny_pvt_v2();
  const auto model = build_pvt_v2(options, FfnConfig{});
  const auto tensors = module_tensors(*model);
  const auto declared = options.dense_tensor_shapes();
  ASSERT_EQ(tensors.size(), declared.size());
  for (size_t i = 0; i < declared.size(); ++i) {
    EXPECT_EQ(tensors[i].first, declared[i].first);
    EXPECT_EQ(tensors[i].second.sizes().vec(), declared[i].second) << declared[i].first;
  }
  EXPECT_EQ(static_cast<double>(count_parameters(*model)), pvt_v2_parameters(options));
  EXPECT_EQ(options.stage_resolution(0), 7);
  EXPECT_EQ(options.stage_resolution(1), 4);
}

TEST(PvtV2, ExFusionInEveryStageFusesToTheTrainedModel) {
  for (const auto variant :
       {FusionVariant::kStatic, FusionVariant::kLearned, FusionVariant::kMemoryBank}) {
    torch::manual_seed(5);
    const auto options = tiny_pvt_v2();
    const auto model =
        build_pvt_v2(options, FfnConfig::of("exfusion", ExFusionOptions().variant(variant)));
    const auto images = torch::randn({4, 1, 28, 28});
    const auto labels = torch::randint(0, 5, {4});
    torch::optim::SGD sgd(model->parameters(), 0.05);
    for (int step = 0; step < 3; ++step) {
      sgd.zero_grad();
      torch::nn::functional::cross_entropy(model->forward(images), labels).backward();
      sgd.step();
    }
    model->eval();
    const auto fused = std::dynamic_pointer_cast<PvtV2Impl>(
        fuse_model(ModelConfig::of("pvt_v2", options), *model));
    ASSERT_NE(fused, nullptr);
    fused->eval();
    torch::NoGradGuard no_grad;
    EXPECT_LT((model->forward(images) - fused->forward(images)).abs().max().item<double>(),
              kPvtV2SameLogits)
        << "variant " << static_cast<int>(variant);
    EXPECT_EQ(static_cast<double>(count_parameters(*fused)), pvt_v2_parameters(options));
  }
}

TEST(PvtV2, ARoutedMoeIsRefusedNamingTheConvolution) {
  for (const auto& ffn :
       {FfnConfig::of("moe", MoeOptions()), FfnConfig::of("ders-moe", DersMoeOptions())}) {
    try {
      build_pvt_v2(tiny_pvt_v2(), ffn);
      ADD_FAILURE() << ffn.kind << " was accepted";
    } catch (const InputError& error) {
      EXPECT_NE(std::string(error.what()).find("depthwise convolution"), std::string::npos)
          << error.what();
    }
  }
}

TEST(PvtV2, UpcyclingByCopyStartsAtTheDenseLogits) {
  torch::manual_seed(9);
  const auto dense = build_pvt_v2(tiny_pvt_v2(), FfnConfig{});
  {
    torch::NoGradGuard no_grad;
    for (auto& parameter : dense->parameters()) parameter.add_(torch::randn_like(parameter) * 0.1);
  }
  const auto images = torch::randn({3, 1, 28, 28});
  dense->eval();
  torch::NoGradGuard no_grad;
  const auto expected = dense->forward(images);
  const auto upcycled = build_pvt_v2(
      tiny_pvt_v2(), FfnConfig::of("exfusion", ExFusionOptions().variant(FusionVariant::kStatic)));
  const auto report =
      upcycle_into(*upcycled, testing::tensors_of(*dense), InitConfig{}, "dense.safetensors");
  EXPECT_EQ(report.layers, 4);
  upcycled->eval();
  EXPECT_LT((upcycled->forward(images) - expected).abs().max().item<double>(), kPvtV2SameLogits);
}

}  // namespace
}  // namespace exfusion
