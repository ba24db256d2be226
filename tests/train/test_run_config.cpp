// Run config: round trip, layering (defaults, file, --set), strict reading (unknown keys, keys of
// another FFN kind, types, ranges) with the source and the key path in every error, YAML and
// JSON alike, and configs written before the FFN sections were per kind.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "../support/cli.h"
#include "../support/input_errors.h"
#include "exfusion/config/config_file.h"
#include "exfusion/data/image_data_config.h"
#include "exfusion/fusion/exfusion_ffn.h"
#include "exfusion/fusion/moe.h"
#include "exfusion/models/vit.h"
#include "exfusion/train/run_config.h"
#include "exfusion/train/run_files.h"
#include "exfusion/util/error.h"

namespace exfusion {
namespace {

using testing::error_of;

RunConfig with(const std::string& assignment) {
  return build_run_config(default_run_config(), {"", {assignment}});
}

std::string error_with(const std::string& assignment) {
  return error_of([&] { with(assignment); });
}

const VisionTransformerOptions& vit(const RunConfig& config) {
  return *config.model.as<VisionTransformerOptions>();
}

TEST(RunConfig, DefaultsAreTheMainJobAndRoundTrip) {
  const auto config = default_run_config();
  EXPECT_EQ(config.ffn.kind, "exfusion");
  const auto* ex = config.ffn.as<ExFusionOptions>();
  ASSERT_NE(ex, nullptr);
  EXPECT_EQ(ex->variant(), FusionVariant::kMemoryBank);
  EXPECT_EQ(ex->num_experts(), 4);
  EXPECT_DOUBLE_EQ(ex->momentum(), 0.95);
  EXPECT_EQ(vit(config).embed_dim, 128);
  const auto json = to_json(config);
  EXPECT_EQ(to_json(run_config_from_json(json, "test")), json);
}

// Each switch of the fast path is read from its key (a round trip of the defaults alone would
// not notice a key that is written but never read).
TEST(RunConfig, KernelSwitchesAreReadFromTheirKeys) {
  const auto defaults = to_json(default_run_config());
  const auto flipped = [&](const std::string& key) {
    auto json = defaults;
    json["train"][key] = !json["train"][key].get<bool>();
    return run_config_from_json(json, "test").train;
  };
  const auto train = default_run_config().train;
  EXPECT_NE(flipped("expert_kernels").expert_kernels, train.expert_kernels);
  EXPECT_NE(flipped("layer_norm_kernels").layer_norm_kernels, train.layer_norm_kernels);
  EXPECT_NE(flipped("bias_grad_epilogue").bias_grad_epilogue, train.bias_grad_epilogue);
  EXPECT_NE(flipped("cuda_graph").cuda_graph, train.cuda_graph);
}

TEST(RunConfig, UnknownKeysAreNamedWithTheirPathAndSource) {
  auto config = default_run_config();
  const auto message = error_of([&] {
    apply_config(config, {{"train", {{"epoch", 3}}}}, "my.json");
  });
  EXPECT_NE(message.find("my.json"), std::string::npos) << message;
  EXPECT_NE(message.find("unknown key 'train.epoch'"), std::string::npos) << message;
  // Nested one level deeper, in the model's section.
  const auto nested = error_of([&] {
    apply_config(config, {{"model", {{"depthh", 3}}}}, "my.yaml");
  });
  EXPECT_NE(nested.find("my.yaml"), std::string::npos) << nested;
  EXPECT_NE(nested.find("model.depthh"), std::string::npos) << nested;
  // A failed layer leaves the config as it was.
  EXPECT_EQ(to_json(config), to_json(default_run_config()));
  apply_config(config, {{"train", {{"epochs", 7}}}, {"model", {{"preset", "tiny"}}}}, "my.json");
  EXPECT_EQ(config.train.epochs, 7);
  EXPECT_EQ(vit(config).embed_dim, 192);
}

TEST(RunConfig, PresetThenExplicitSizes) {
  auto config = default_run_config();
  apply_config(config, {{"model", {{"preset", "small"}, {"depth", 6}}}}, "x");
  EXPECT_EQ(vit(config).embed_dim, 384);
  EXPECT_EQ(vit(config).num_heads, 6);
  EXPECT_EQ(vit(config).depth, 6);
  EXPECT_EQ(vit(config).img_size, 28);  // the image size stays the data's
}

TEST(RunConfig, TypeAndRangeErrorsNameTheKey) {
  const auto typed = error_with("train.epochs=\"x\"");
  EXPECT_NE(typed.find("--set train.epochs=\"x\""), std::string::npos) << typed;
  EXPECT_NE(typed.find("train.epochs = \"x\": expected an integer"), std::string::npos) << typed;
  EXPECT_NE(
      error_with("ffn.num_experts=0").find("ffn.num_experts = 0: expected a value in [1, 1024]"),
      std::string::npos);
  EXPECT_NE(error_with("ffn.momentum=1").find("ffn.momentum"), std::string::npos);
  EXPECT_NE(error_with("ffn.variant=xw").find("expected sw, dw or mb"), std::string::npos);
  EXPECT_NE(error_with("ffn.router=both").find("ffn.router"), std::string::npos);
  EXPECT_NE(error_with("train.lr=0").find("train.lr"), std::string::npos);
  EXPECT_NE(error_with("data.train_images=/a").find("all four"), std::string::npos);
  EXPECT_NE(error_with("train.precision=fp16").find("train.precision"), std::string::npos);
  EXPECT_NE(error_with("ffn.kind=sparse").find("expected dense, exfusion"), std::string::npos);
  EXPECT_NE(error_with("ffn.layers=[0,9]").find("ffn.layers"), std::string::npos);
  EXPECT_NE(error_with("data.mean=[0.1,0.2]").find("data.mean"), std::string::npos);
}

TEST(RunConfig, AnFfnSectionCarriesOnlyItsKindsKeys) {
  const auto message = error_with("ffn.top_k=1");
  EXPECT_NE(message.find("'ffn.top_k' is a key of ffn kind moe"), std::string::npos) << message;
  EXPECT_NE(message.find("ffn.kind is exfusion"), std::string::npos) << message;
  // Another kind starts from its own defaults: none of exfusion's keys survive.
  const auto moe = build_run_config(default_run_config(), {"", {"ffn.kind=moe", "ffn.top_k=1"}});
  ASSERT_NE(moe.ffn.as<MoeOptions>(), nullptr);
  EXPECT_EQ(moe.ffn.as<MoeOptions>()->top_k(), 1);
  const auto json = moe.ffn.to_json();
  EXPECT_FALSE(json.contains("variant")) << json.dump();
  EXPECT_EQ(json["kind"], "moe");
  EXPECT_EQ(run_config_from_json(to_json(moe), "round trip").ffn.to_json(), json);
  // The MoE's own cross-field check names the full path.
  const auto k = error_of([] {
    build_run_config(default_run_config(), {"", {"ffn.kind=moe", "ffn.top_k=9"}});
  });
  EXPECT_NE(k.find("ffn.top_k = 9: expected 1 to ffn.num_experts = 4"), std::string::npos) << k;
}

TEST(RunConfig, YamlAndJsonGiveTheSameRun) {
  const auto dir = testing::fresh_temp_dir("yaml-json");
  {
    std::ofstream(dir / "run.json")
        << R"({"ffn": {"kind": "moe", "top_k": 1}, "train": {"lr": 0.001, "epochs": 2},
              "model": {"depth": 2}, "data": {"mean": [0.5], "std": [0.25]}})";
    std::ofstream(dir / "run.yaml") << "ffn:\n  kind: moe\n  top_k: 1\ntrain:\n  lr: 1.0e-3\n"
                                       "  epochs: 2\nmodel:\n  depth: 2\ndata:\n  mean: [0.5]\n"
                                       "  std: [0.25]\n";
  }
  const auto from_json = build_run_config(default_run_config(), {(dir / "run.json").string(), {}});
  const auto from_yaml = build_run_config(default_run_config(), {(dir / "run.yaml").string(), {}});
  EXPECT_EQ(to_json(from_json), to_json(from_yaml));
  EXPECT_EQ(from_yaml.train.epochs, 2);
  // A wrong key in a nested section of a YAML file names the file and the key.
  std::ofstream(dir / "bad.yaml") << "train:\n  lr: 0.1\nffn:\n  kind: exfusion\n  topk: 3\n";
  const auto message = error_of([&] {
    build_run_config(default_run_config(), {(dir / "bad.yaml").string(), {}});
  });
  EXPECT_NE(message.find("bad.yaml"), std::string::npos) << message;
  EXPECT_NE(message.find("ffn.topk"), std::string::npos) << message;
  testing::remove_tree(dir);
}

TEST(RunConfig, ShippedConfigsParseAndTheMainJobIsTheDefault) {
  const std::filesystem::path dir = std::filesystem::path(EXFUSION_SOURCE_DIR) / "configs";
  int parsed = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    if (entry.path().extension() != ".yaml") continue;
    EXPECT_NO_THROW(build_run_config(default_run_config(), {entry.path().string(), {}}))
        << entry.path();
    ++parsed;
  }
  EXPECT_GE(parsed, 5);
  const auto main_job = build_run_config(RunConfig{}, {(dir / "fmnist-vit-mb.yaml").string(), {}});
  EXPECT_EQ(to_json(main_job), to_json(default_run_config()));
}

TEST(RunConfig, AssignmentsThatDependOnEachOtherMayComeInAnyOrder) {
  // Alone, model.patch_size=8 does not divide the default 28 px, nor does the preset's 3-value
  // mean fit the default single channel: together with the keys they need, both are fine.
  const auto sized =
      build_run_config(default_run_config(), {"", {"model.patch_size=8", "model.img_size=32"}});
  EXPECT_EQ(to_json(sized)["model"]["patch_size"], 8);
  const auto deit = build_run_config(
      default_run_config(), {"", {"data.preset=deit", "model.in_chans=3", "data.mixup=0"}});
  EXPECT_EQ(deit.data.as<ImageDataConfig>()->mean.size(), 3u);
  EXPECT_EQ(deit.data.as<ImageDataConfig>()->mixup,
            0.0);  // a key beside the preset wins, as in a file
  // A wrong value among several is still named with its own assignment.
  const auto message = error_of([] {
    build_run_config(default_run_config(), {"", {"model.embed_dim=32", "train.lr=-1"}});
  });
  EXPECT_NE(message.find("--set train.lr=-1: train.lr = -1"), std::string::npos) << message;
}

// Checkpoints written before this layout kept every kind's keys in one flat ffn section.
TEST(RunConfig, AFormatOneConfigStillReads) {
  nlohmann::json stored = to_json(default_run_config());
  stored.erase("task");
  stored["model"].erase("kind");
  stored["ffn"] = {{"kind", "moe"},
                   {"variant", "mb"},
                   {"num_experts", 4},
                   {"momentum", 0.95},
                   {"bank_init", 0.0},
                   {"router", "shared"},
                   {"expert_init", "independent"},
                   {"expert_noise_std", 0.001},
                   {"top_k", 1},
                   {"capacity_factor", 1.25},
                   {"aux_loss_coef", 0.01},
                   {"layers", nlohmann::json::array()}};
  EXPECT_NE(error_of([&] { run_config_from_json(stored, "old"); }), "no error");
  const auto config = run_config_from_json(upgrade_stored_config(stored, 1), "old");
  ASSERT_NE(config.ffn.as<MoeOptions>(), nullptr);
  EXPECT_EQ(config.ffn.as<MoeOptions>()->top_k(), 1);
}

}  // namespace
}  // namespace exfusion
