// Run config JSON: round trip, strict merging (unknown keys), type errors and range
// checks each name the source and the key.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "exfusion/train/run_config.h"
#include "exfusion/util/error.h"

namespace exfusion {
namespace {

std::string error_of(const std::function<void()>& action) {
  try {
    action();
  } catch (const InputError& error) {
    return error.what();
  }
  return "no error";
}

TEST(RunConfig, DefaultsAreTheMainJobAndRoundTrip) {
  const auto config = default_run_config();
  EXPECT_EQ(config.model.ffn.kind, FfnKind::kExFusion);
  EXPECT_EQ(config.model.ffn.exfusion.variant(), FusionVariant::kMemoryBank);
  EXPECT_EQ(config.model.ffn.exfusion.num_experts(), 4);
  EXPECT_DOUBLE_EQ(config.model.ffn.exfusion.momentum(), 0.95);
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

TEST(RunConfig, MergeRejectsUnknownKeysWithTheirPath) {
  auto base = default_run_config_json();
  EXPECT_EQ(error_of([&] {
              merge_config(base, {{"train", {{"epoch", 3}}}}, "my.json");
            }),
            "my.json: unknown key 'train.epoch'");
  merge_config(base, {{"train", {{"epochs", 7}}}, {"model", {{"preset", "tiny"}}}}, "my.json");
  const auto config = run_config_from_json(base, "my.json");
  EXPECT_EQ(config.train.epochs, 7);
}

TEST(RunConfig, PresetThenExplicitSizes) {
  auto json = default_run_config_json();
  merge_config(json, {{"model", {{"preset", "small"}, {"depth", 6}}}}, "x");
  const auto config = run_config_from_json(json, "x");
  EXPECT_EQ(config.model.embed_dim, 384);
  EXPECT_EQ(config.model.num_heads, 6);
  EXPECT_EQ(config.model.depth, 6);
  EXPECT_EQ(config.model.img_size, 28);  // the image size stays the data's
}

TEST(RunConfig, TypeAndRangeErrorsNameTheKey) {
  auto with = [](const std::string& assignment) {
    auto json = default_run_config_json();
    merge_config(json, parse_assignment(assignment), "--set " + assignment);
    return error_of([&] { run_config_from_json(json, "cfg.json"); });
  };
  EXPECT_EQ(with("train.epochs=\"x\""), "cfg.json: train.epochs = \"x\": expected an integer");
  EXPECT_NE(with("ffn.num_experts=0").find("ffn.num_experts = 0: expected at least 1"),
            std::string::npos);
  EXPECT_NE(with("ffn.momentum=1").find("ffn.momentum"), std::string::npos);
  EXPECT_NE(with("ffn.variant=xw").find("expected sw, dw or mb"), std::string::npos);
  EXPECT_NE(with("ffn.router=both").find("ffn.router"), std::string::npos);
  EXPECT_NE(with("train.lr=0").find("train.lr"), std::string::npos);
  EXPECT_NE(with("data.train_images=/a").find("all four"), std::string::npos);
  EXPECT_NE(with("train.precision=fp16").find("train.precision"), std::string::npos);
}

TEST(RunConfig, ShippedConfigsParseAndTheMainJobIsTheDefault) {
  const std::filesystem::path dir = std::filesystem::path(EXFUSION_SOURCE_DIR) / "configs";
  int parsed = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    if (entry.path().extension() != ".json") continue;
    auto json = default_run_config_json();
    merge_config(json, read_json_file(entry.path().string()), entry.path().string());
    EXPECT_NO_THROW(run_config_from_json(json, entry.path().string())) << entry.path();
    ++parsed;
  }
  EXPECT_GE(parsed, 4);
  EXPECT_EQ(read_json_file((dir / "fmnist-vit-mb.json").string()), default_run_config_json());
}

TEST(RunConfig, AssignmentsParseJsonValuesAndPlainStrings) {
  EXPECT_EQ(parse_assignment("train.lr=0.5"), (nlohmann::json{{"train", {{"lr", 0.5}}}}));
  EXPECT_EQ(parse_assignment("ffn.variant=dw"), (nlohmann::json{{"ffn", {{"variant", "dw"}}}}));
  EXPECT_EQ(parse_assignment("ffn.layers=[0,2]"), (nlohmann::json{{"ffn", {{"layers", {0, 2}}}}}));
  EXPECT_THROW(parse_assignment("novalue"), InputError);
}

}  // namespace
}  // namespace exfusion
