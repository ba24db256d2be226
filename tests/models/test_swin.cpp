// Swin (v1): the presets' parameters (timm's counts exactly, and the paper's within 3 %) and
// multiply-adds (the paper's within 3 %); the module's tensors against dense_tensor_shapes(),
// with no index or mask among them; the relative position index; the shifted-window mask (no
// token attends across the image's border after the roll); sizes whose windows or halvings do
// not fit refused by name; ExFusion in every stage fused equals trained; MoE in every stage
// learns; upcycling by copy starts at the dense logits; a killed run resumes bit-identical.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <vector>

#include "../support/cli.h"
#include "../support/module_snapshot.h"
#include "../support/processes.h"
#include "../support/run_comparison.h"
#include "exfusion/fusion/exfusion_ffn.h"
#include "exfusion/fusion/moe.h"
#include "exfusion/io/module_tensors.h"
#include "exfusion/models/registry.h"
#include "exfusion/models/swin.h"
#include "exfusion/train/run_files.h"
#include "exfusion/upcycling/upcycle.h"
#include "exfusion/util/error.h"

namespace exfusion {
namespace {

// Fused against trained logits: float32 sums through a few blocks, far below a logit's O(1).
constexpr double kSwinSameLogits = 1e-5;

// Two stages: a 14 × 14 grid in 2 × 2 windows of 7 (block 1 shifted), then 7 × 7 in one window.
SwinOptions tiny_swin() {
  SwinOptions options;
  options.img_size = 28;
  options.in_chans = 1;
  options.patch_size = 2;
  options.embed_dim = 8;
  options.depths = {2, 2};
  options.num_heads = {2, 4};
  options.window_size = 7;
  options.num_classes = 5;
  return options;
}

std::shared_ptr<SwinTransformerImpl> build_swin(const SwinOptions& options, const FfnConfig& ffn) {
  return std::dynamic_pointer_cast<SwinTransformerImpl>(options.build(ffn));
}

double parameters_of(const SwinOptions& options) {
  return dense_model_parameters(DeclaredModelOptions<SwinOptions>(options));
}

// timm 1.0.31's counts (instantiated), the paper's 29 M / 50 M / 88 M and 4.5 / 8.7 / 15.4 G
// multiply-adds at 224 px (what it calls FLOPs) within the 3 %.
TEST(Swin, PresetsHaveTimmsParametersAndThePapersSizes) {
  struct Published {
    const char* preset;
    double timm_parameters, paper_parameters, paper_macs;
  };
  for (const auto& [preset, timm_parameters, paper_parameters, paper_macs] :
       {Published{"swin_tiny_patch4_window7_224", 28288354, 29e6, 4.5e9},
        Published{"swin_small_patch4_window7_224", 49606258, 50e6, 8.7e9},
        Published{"swin_base_patch4_window7_224", 87768224, 88e6, 15.4e9}}) {
    SwinOptions options;
    options.apply_preset(preset, {"test", "model"});
    options.validate();
    const double parameters = parameters_of(options);
    EXPECT_EQ(parameters, timm_parameters) << preset;
    EXPECT_NEAR(parameters / paper_parameters, 1.0, 0.03) << preset;
    const double macs = options.forward_flops_per_sample(FfnConfig{}) / 2;
    EXPECT_NEAR(macs / paper_macs, 1.0, 0.03) << preset << ": " << macs;
  }
}

TEST(Swin, ModuleTensorsAreTheDeclaredShapesWithoutIndexOrMask) {
  const auto options = tiny_swin();
  const auto model = build_swin(options, FfnConfig{});
  const auto tensors = module_tensors(*model);
  const auto declared = options.dense_tensor_shapes();
  ASSERT_EQ(tensors.size(), declared.size());
  for (size_t i = 0; i < declared.size(); ++i) {
    EXPECT_EQ(tensors[i].first, declared[i].first);
    EXPECT_EQ(tensors[i].second.sizes().vec(), declared[i].second) << declared[i].first;
  }
  EXPECT_EQ(static_cast<double>(count_parameters(*model)), parameters_of(options));
  EXPECT_TRUE(model->named_buffers().is_empty());
}

// timm's index for a 7 × 7 window: (dy + 6) · 13 + (dx + 6); token 0 against itself is the
// centre of the 13 × 13 table, against token 1 (one column right) one entry before it.
TEST(Swin, RelativePositionIndexIsTimms) {
  const auto index = relative_position_index(7);
  ASSERT_EQ(index.sizes().vec(), (std::vector<int64_t>{49, 49}));
  EXPECT_EQ(index[0][0].item<int64_t>(), 84);
  EXPECT_EQ(index[0][1].item<int64_t>(), 83);
  EXPECT_EQ(index[0][7].item<int64_t>(), 84 - 13);
  EXPECT_EQ(index.min().item<int64_t>(), 0);
  EXPECT_EQ(index.max().item<int64_t>(), 168);
}

// After the roll by −s, the tokens at rows (and columns) R − s .. R − 1 are the image's first
// ones, wrapped around. Two tokens of a window may attend to each other (mask 0) exactly when
// both or neither wrapped on each axis; then they were within a window's reach in the image
// itself, never across its border.
TEST(Swin, ShiftedWindowsNeverAttendAcrossTheImageBorder) {
  const int64_t resolution = 14, window = 7, shift = 3;
  const auto mask = shifted_window_mask(resolution, window, shift);
  ASSERT_EQ(mask.sizes().vec(), (std::vector<int64_t>{4, 49, 49}));
  const auto values = mask.accessor<float, 3>();
  const int64_t per_row = resolution / window;
  for (int64_t w = 0; w < mask.size(0); ++w) {
    for (int64_t a = 0; a < 49; ++a) {
      for (int64_t b = 0; b < 49; ++b) {
        const int64_t ya = (w / per_row) * window + a / window,
                      xa = (w % per_row) * window + a % window;
        const int64_t yb = (w / per_row) * window + b / window,
                      xb = (w % per_row) * window + b % window;
        const auto wrapped = [&](int64_t p) { return p >= resolution - shift; };
        const bool same_side = wrapped(ya) == wrapped(yb) && wrapped(xa) == wrapped(xb);
        ASSERT_EQ(values[w][a][b], same_side ? 0.f : -100.f) << w << " " << a << " " << b;
        if (same_side) {
          // In the image (positions before the roll) the two are less than a window apart.
          const auto original = [&](int64_t p) { return (p + shift) % resolution; };
          EXPECT_LT(std::abs(original(ya) - original(yb)), window);
          EXPECT_LT(std::abs(original(xa) - original(xb)), window);
        }
      }
    }
  }
  // The top-left window never wraps: no mask at all there.
  EXPECT_EQ(mask[0].abs().max().item<float>(), 0.f);
}

TEST(Swin, SizesThatDoNotFitAreRefusedByName) {
  const auto refused = [](const SwinOptions& options, const std::string& key) {
    try {
      options.validate();
    } catch (const InputError& error) {
      EXPECT_NE(std::string(error.what()).find(key), std::string::npos) << error.what();
      return true;
    }
    return false;
  };
  auto window = tiny_swin();
  window.window_size = 5;  // 14 tokens are no whole number of windows of 5
  EXPECT_TRUE(refused(window, "model.window_size"));
  auto halving = tiny_swin();
  halving.depths = {2, 2, 2};  // 14 → 7 → 3.5
  halving.num_heads = {2, 4, 8};
  EXPECT_TRUE(refused(halving, "model.img_size"));
  auto heads = tiny_swin();
  heads.num_heads = {3, 4};  // 8 is no multiple of 3
  EXPECT_TRUE(refused(heads, "model.num_heads"));
  auto stages = tiny_swin();
  stages.num_heads = {2};
  EXPECT_TRUE(refused(stages, "model.num_heads"));
}

// A few SGD steps on a fixed batch, so that experts (and the bank) move apart.
void train_a_little(SwinTransformerImpl& model, const torch::Tensor& images,
                    const torch::Tensor& labels, int steps, double lr) {
  torch::optim::SGD sgd(model.parameters(), lr);
  for (int step = 0; step < steps; ++step) {
    sgd.zero_grad();
    torch::nn::functional::cross_entropy(model.forward(images), labels).backward();
    sgd.step();
  }
}

TEST(Swin, ExFusionInEveryStageFusesToTheTrainedModel) {
  for (const auto variant :
       {FusionVariant::kStatic, FusionVariant::kLearned, FusionVariant::kMemoryBank}) {
    torch::manual_seed(5);
    const auto options = tiny_swin();
    const auto model =
        build_swin(options, FfnConfig::of("exfusion", ExFusionOptions().variant(variant)));
    const auto images = torch::randn({4, 1, 28, 28});
    train_a_little(*model, images, torch::randint(0, 5, {4}), 3, 0.05);
    model->eval();
    const auto fused = std::dynamic_pointer_cast<SwinTransformerImpl>(
        fuse_model(ModelConfig::of("swin", options), *model));
    ASSERT_NE(fused, nullptr);
    fused->eval();
    torch::NoGradGuard no_grad;
    EXPECT_LT((model->forward(images) - fused->forward(images)).abs().max().item<double>(),
              kSwinSameLogits)
        << "variant " << static_cast<int>(variant);
    EXPECT_EQ(static_cast<double>(count_parameters(*fused)), parameters_of(options));
  }
}

// MoE-4-1 in the FFNs of both stages learns a fixed batch (Adam at 1e-2, 40 steps: the loss
// falls below half of where it starts, a wide margin on ln 5 ≈ 1.6 for 8 images), and
// ffn.layers reaches stage 1 by counting stage 0's blocks first.
TEST(Swin, MoeInEveryStageLearnsAndLayersCountAcrossStages) {
  torch::manual_seed(8);
  const auto model = build_swin(
      tiny_swin(), FfnConfig::of("moe", MoeOptions().num_experts(4).top_k(1).capacity_factor(0)));
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

  const auto stage_one_only = build_swin(tiny_swin(), FfnConfig::of("moe", MoeOptions(), {2, 3}));
  for (const auto& [name, tensor] : module_tensors(*stage_one_only)) {
    if (name.find(".mlp.fc1.weight") == std::string::npos) continue;
    const bool in_stage_one = name.rfind("layers.1.", 0) == 0;
    EXPECT_EQ(tensor.dim(), in_stage_one ? 3 : 2) << name;
  }
}

TEST(Swin, UpcyclingByCopyStartsAtTheDenseLogits) {
  torch::manual_seed(9);
  const auto dense = build_swin(tiny_swin(), FfnConfig{});
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
    const auto upcycled = build_swin(tiny_swin(), ffn);
    const auto report =
        upcycle_into(*upcycled, testing::tensors_of(*dense), InitConfig{}, "dense.safetensors");
    EXPECT_EQ(report.layers, 4);  // every block of both stages
    upcycled->eval();
    EXPECT_LT((upcycled->forward(images) - expected).abs().max().item<double>(), kSwinSameLogits)
        << ffn.kind;
  }
}

// ExFusion-mb Swin killed inside a step and inside an evaluation, then resumed: state, export,
// summary and log equal the uninterrupted run's, bit for bit.
TEST(Swin, AKilledRunResumesBitIdentical) {
  const auto dir = testing::fresh_temp_dir("swin-resume");
  testing::write_toy_idx_dataset(dir, 64, 16);
  const std::string args =
      "--data " + dir.string() +
      " --threads 1 --variant mb --experts 2 --set model.kind=swin model.img_size=28 "
      "model.in_chans=1 model.patch_size=2 model.embed_dim=8 model.depths=[2,2] "
      "model.num_heads=[2,4] model.window_size=7 model.num_classes=10 train.batch_size=16 "
      "train.epochs=2 train.seed=3 train.log_every=2 train.checkpoint_every=2";
  const auto reference = testing::run_cli("train " + args + " --out " + (dir / "ref").string());
  ASSERT_EQ(reference.exit_code, 0) << reference.output;
  const auto run = dir / "killed";
  auto first = testing::spawn_cli("train " + args + " --out " + run.string(), dir / "out.txt",
                                  "EXFUSION_KILL_AT=step:3");
  ASSERT_EQ(testing::wait_for(first), 128 + SIGKILL) << testing::read_text(dir / "out.txt");
  auto second = testing::spawn_cli("train --resume " + run.string(), dir / "out.txt",
                                   "EXFUSION_KILL_AT=eval:1");
  ASSERT_EQ(testing::wait_for(second), 128 + SIGKILL) << testing::read_text(dir / "out.txt");
  const auto last = testing::run_cli("train --resume " + run.string());
  ASSERT_EQ(last.exit_code, 0) << last.output;
  testing::expect_same_run(dir / "ref", run);
  testing::remove_tree(dir);
}

}  // namespace
}  // namespace exfusion
