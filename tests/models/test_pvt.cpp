// PVT v1: the presets' parameters (the authors' model instantiated: exactly, and the paper's
// Table II within 3 %) and multiply-adds (the paper's within 3 %); the module's tensors against
// dense_tensor_shapes(); sizes the reduction or the halvings do not fit refused by name;
// ExFusion in every stage fused equals trained; MoE in every stage learns; upcycling by copy
// starts at the dense logits.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <vector>

#include "../support/module_snapshot.h"
#include "exfusion/fusion/exfusion_ffn.h"
#include "exfusion/fusion/moe.h"
#include "exfusion/io/module_tensors.h"
#include "exfusion/models/pvt.h"
#include "exfusion/models/registry.h"
#include "exfusion/train/run_files.h"
#include "exfusion/upcycling/upcycle.h"
#include "exfusion/util/error.h"

namespace exfusion {
namespace {

// Fused against trained logits: float32 sums through a few blocks, far below a logit's O(1).
constexpr double kPvtSameLogits = 1e-5;

// Two stages: a 14 × 14 grid with keys reduced 2 × 2, then 7 × 7 and the class token.
PvtOptions tiny_pvt() {
  PvtOptions options;
  options.img_size = 28;
  options.in_chans = 1;
  options.patch_size = 2;
  options.embed_dims = {8, 16};
  options.num_heads = {1, 2};
  options.mlp_ratios = {4, 2};
  options.depths = {2, 2};
  options.sr_ratios = {2, 1};
  options.num_classes = 5;
  return options;
}

std::shared_ptr<PvtImpl> build_pvt(const PvtOptions& options, const FfnConfig& ffn) {
  return std::dynamic_pointer_cast<PvtImpl>(options.build(ffn));
}

double pvt_parameters(const PvtOptions& options) {
  return dense_model_parameters(DeclaredModelOptions<PvtOptions>(options));
}

// The authors' pvt_tiny … pvt_large instantiated (docs/design/swin-pvt-reference.md §3.1), and
// the paper's Table II: 13.2 / 24.5 / 44.2 / 61.4 M parameters, 1.9 / 3.8 / 6.7 / 9.8 G
// multiply-adds at 224 px (what it calls FLOPs), within the 3 %.
TEST(PvtV1, PresetsHaveTheAuthorsParametersAndThePapersSizes) {
  struct Published {
    const char* preset;
    double authors_parameters, paper_parameters, paper_macs;
  };
  for (const auto& [preset, authors_parameters, paper_parameters, paper_macs] :
       {Published{"pvt_tiny", 13229288, 13.2e6, 1.9e9},
        Published{"pvt_small", 24485864, 24.5e6, 3.8e9},
        Published{"pvt_medium", 44208104, 44.2e6, 6.7e9},
        Published{"pvt_large", 61369320, 61.4e6, 9.8e9}}) {
    PvtOptions options;
    options.apply_preset(preset, {"test", "model"});
    options.validate();
    const double parameters = pvt_parameters(options);
    EXPECT_EQ(parameters, authors_parameters) << preset;
    EXPECT_NEAR(parameters / paper_parameters, 1.0, 0.03) << preset;
    const double macs = options.forward_flops_per_sample(FfnConfig{}) / 2;
    EXPECT_NEAR(macs / paper_macs, 1.0, 0.03) << preset << ": " << macs;
  }
}

TEST(PvtV1, ModuleTensorsAreTheDeclaredShapes) {
  const auto options = tiny_pvt();
  const auto model = build_pvt(options, FfnConfig{});
  const auto tensors = module_tensors(*model);
  const auto declared = options.dense_tensor_shapes();
  ASSERT_EQ(tensors.size(), declared.size());
  for (size_t i = 0; i < declared.size(); ++i) {
    EXPECT_EQ(tensors[i].first, declared[i].first);
    EXPECT_EQ(tensors[i].second.sizes().vec(), declared[i].second) << declared[i].first;
  }
  EXPECT_EQ(static_cast<double>(count_parameters(*model)), pvt_parameters(options));
  EXPECT_EQ(model->forward(torch::randn({2, 1, 28, 28})).sizes().vec(),
            (std::vector<int64_t>{2, 5}));
}

TEST(PvtV1, SizesThatDoNotFitAreRefusedByName) {
  const auto refused = [](const PvtOptions& options, const std::string& key) {
    try {
      options.validate();
    } catch (const InputError& error) {
      EXPECT_NE(std::string(error.what()).find(key), std::string::npos) << error.what();
      return true;
    }
    return false;
  };
  auto reduction = tiny_pvt();
  reduction.sr_ratios = {4, 1};  // 14 is no multiple of 4
  EXPECT_TRUE(refused(reduction, "model.sr_ratios"));
  auto last = tiny_pvt();
  last.sr_ratios = {2, 7};  // the class token has no place in a reduced grid
  EXPECT_TRUE(refused(last, "model.sr_ratios"));
  auto lists = tiny_pvt();
  lists.mlp_ratios = {4};
  EXPECT_TRUE(refused(lists, "model.mlp_ratios"));
  auto halving = tiny_pvt();
  halving.img_size = 20;  // 10 → 5 → 2.5
  halving.depths = {1, 1, 1};
  halving.embed_dims = {8, 16, 32};
  halving.num_heads = {1, 2, 4};
  halving.mlp_ratios = {2, 2, 2};
  halving.sr_ratios = {1, 1, 1};
  EXPECT_TRUE(refused(halving, "model.img_size"));
}

TEST(PvtV1, ExFusionInEveryStageFusesToTheTrainedModel) {
  for (const auto variant :
       {FusionVariant::kStatic, FusionVariant::kLearned, FusionVariant::kMemoryBank}) {
    torch::manual_seed(5);
    const auto options = tiny_pvt();
    const auto model =
        build_pvt(options, FfnConfig::of("exfusion", ExFusionOptions().variant(variant)));
    const auto images = torch::randn({4, 1, 28, 28});
    const auto labels = torch::randint(0, 5, {4});
    torch::optim::SGD sgd(model->parameters(), 0.05);
    for (int step = 0; step < 3; ++step) {
      sgd.zero_grad();
      torch::nn::functional::cross_entropy(model->forward(images), labels).backward();
      sgd.step();
    }
    model->eval();
    const auto fused =
        std::dynamic_pointer_cast<PvtImpl>(fuse_model(ModelConfig::of("pvt_v1", options), *model));
    ASSERT_NE(fused, nullptr);
    fused->eval();
    torch::NoGradGuard no_grad;
    EXPECT_LT((model->forward(images) - fused->forward(images)).abs().max().item<double>(),
              kPvtSameLogits)
        << "variant " << static_cast<int>(variant);
    EXPECT_EQ(static_cast<double>(count_parameters(*fused)), pvt_parameters(options));
  }
}

// MoE-4-1 in every block of both stages learns a fixed batch (Adam at 1e-2, 40 steps: the loss
// below half of where it starts, a wide margin on ln 5 ≈ 1.6 for 8 images).
TEST(PvtV1, MoeInEveryStageLearns) {
  torch::manual_seed(8);
  const auto model = build_pvt(
      tiny_pvt(), FfnConfig::of("moe", MoeOptions().num_experts(4).top_k(1).capacity_factor(0)));
  const auto images = torch::randn({8, 1, 28, 28});
  const auto labels = torch::randint(0, 5, {8});
  torch::optim::Adam adam(model->parameters(), 1e-2);
  double first = 0, last = 0;
  for (int step = 0; step < 40; ++step) {
    adam.zero_grad();
    const auto loss = torch::nn::functional::cross_entropy(model->forward(images), labels);
    loss.backward();
    adam.step();
    (step == 0 ? first : last) = loss.item<double>();
  }
  EXPECT_LT(last, 0.5 * first) << "first " << first << ", last " << last;
}

TEST(PvtV1, UpcyclingByCopyStartsAtTheDenseLogits) {
  torch::manual_seed(9);
  const auto dense = build_pvt(tiny_pvt(), FfnConfig{});
  {
    torch::NoGradGuard no_grad;
    for (auto& parameter : dense->parameters()) parameter.add_(torch::randn_like(parameter) * 0.1);
  }
  const auto images = torch::randn({3, 1, 28, 28});
  dense->eval();
  torch::NoGradGuard no_grad;
  const auto expected = dense->forward(images);
  for (const auto& ffn :
       {FfnConfig::of("exfusion", ExFusionOptions().variant(FusionVariant::kStatic)),
        FfnConfig::of(
            "moe",
            MoeOptions().num_experts(4).top_k(1).capacity_factor(0).renormalize_top1(true))}) {
    const auto upcycled = build_pvt(tiny_pvt(), ffn);
    const auto report =
        upcycle_into(*upcycled, testing::tensors_of(*dense), InitConfig{}, "dense.safetensors");
    EXPECT_EQ(report.layers, 4);
    upcycled->eval();
    EXPECT_LT((upcycled->forward(images) - expected).abs().max().item<double>(), kPvtSameLogits)
        << ffn.kind;
  }
}

}  // namespace
}  // namespace exfusion
