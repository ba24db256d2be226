// exfusion upcycle and train --init from the command line: a dense run upcycled into a MoE by
// Drop-Upcycling and continued, the one-command route through init.from, DeRS upcycling into
// both DeRS kinds with their parameter counts, and the refusals.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "../support/cli.h"
#include "exfusion/io/safetensors.h"

namespace exfusion {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

using testing::kTinyRunArgs;

json start_line(const fs::path& run) {
  std::ifstream in(run / "metrics.jsonl");
  std::string line;
  std::getline(in, line);
  return json::parse(line);
}

class UpcycleCli : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::fresh_temp_dir("upcycle-cli");
    testing::write_toy_idx_dataset(dir_, 64, 32);
    const auto dense =
        testing::run_cli("train --data " + dir_.string() + " --out " + (dir_ / "dense").string() +
                         " --set ffn.kind=dense" + kTinyRunArgs);
    ASSERT_EQ(dense.exit_code, 0) << dense.output;
  }
  void TearDown() override { testing::remove_tree(dir_); }
  fs::path dir_;
};

TEST_F(UpcycleCli, DropUpcycledMoeIsWrittenAndContinuedByTrainInit) {
  const auto up = dir_ / "up";
  const auto result =
      testing::run_cli("upcycle " + (dir_ / "dense").string() + " --to moe --method drop --ratio " +
                       "0.25 --out " + up.string() + " --set ffn.num_experts=3 2>/dev/null");
  ASSERT_EQ(result.exit_code, 0) << result.output;
  const auto summary = testing::printed_json(result.output);
  EXPECT_EQ(summary["layers"], 2);
  EXPECT_EQ(summary["experts"], 3);
  EXPECT_EQ(summary["method"]["method"], "drop");
  EXPECT_GT(summary["params_upcycled"].get<int64_t>(), summary["params_dense"].get<int64_t>());

  // The init file records the dense FFN weights the experts came from.
  const auto init = load_safetensors(up / "init.safetensors");
  const auto dense = load_safetensors(dir_ / "dense" / "model.safetensors");
  EXPECT_EQ(init.metadata.at("exfusion.kind"), "upcycled-model");
  EXPECT_TRUE(torch::equal(init.tensors.at("dense_base.blocks.1.mlp.fc2.weight"),
                           dense.tensors.at("blocks.1.mlp.fc2.weight")));
  EXPECT_EQ(init.tensors.at("model.blocks.0.mlp.fc1.weight").sizes(),
            (std::vector<int64_t>{3, 32, 16}));  // N, H = 2·D, D

  const auto run = dir_ / "continued";
  const auto trained = testing::run_cli("train --init " + up.string() + " --out " + run.string() +
                                        " --set train.max_steps=2");
  ASSERT_EQ(trained.exit_code, 0) << trained.output;
  const auto start = start_line(run);
  EXPECT_EQ(start["init"]["method"], "loaded") << start.dump();
  EXPECT_EQ(start["config"]["ffn"]["kind"], "moe");
  EXPECT_TRUE(fs::exists(run / "state.safetensors"));

  // A second upcycle into the same directory needs --force; --init does not take --config.
  const auto again =
      testing::run_cli("upcycle " + (dir_ / "dense").string() + " --to moe --out " + up.string());
  EXPECT_EQ(again.exit_code, 2) << again.output;
  EXPECT_NE(again.output.find("already exists"), std::string::npos) << again.output;
  const auto both = testing::run_cli("train --init " + up.string() + " --config " +
                                     (up / "config.yaml").string());
  EXPECT_EQ(both.exit_code, 2) << both.output;
}

TEST_F(UpcycleCli, OneCommandFromADenseRunThroughInitFrom) {
  const auto run = dir_ / "sw";
  const auto result = testing::run_cli(
      "train --data " + dir_.string() + " --out " + run.string() + kTinyRunArgs +
      " ffn.kind=exfusion ffn.variant=sw ffn.num_experts=2 init.method=copy init.from=" +
      (dir_ / "dense").string());
  ASSERT_EQ(result.exit_code, 0) << result.output;
  const auto start = start_line(run);
  EXPECT_EQ(start["init"]["method"], "copy") << start.dump();
  EXPECT_EQ(start["init"]["layers"], 2);
  EXPECT_NE(result.output.find("weights from"), std::string::npos) << result.output;
}

// DeRS upcycling (--to ders is ders-moe) writes an init that train --init continues; info and
// summary.json count the trainable parameters (base + deltas, fewer than N full experts) and
// the stored values (the sparse positions besides). ders-exfusion through init.from fuses.
TEST_F(UpcycleCli, DersUpcyclingIntoBothKindsCountsTrainableAndStoredParameters) {
  const auto up = dir_ / "ders";
  const auto result =
      testing::run_cli("upcycle " + (dir_ / "dense").string() + " --to ders --out " + up.string() +
                       " --set ffn.num_experts=4 ffn.delta_keep=0.2");
  ASSERT_EQ(result.exit_code, 0) << result.output;
  const auto summary = testing::printed_json(result.output);
  EXPECT_EQ(summary["to"], "ders-moe-n4-k2-sparse0.2");
  EXPECT_EQ(summary["layers"], 2);
  const auto init = load_safetensors(up / "init.safetensors");
  EXPECT_TRUE(torch::equal(init.tensors.at("model.blocks.0.mlp.fc1.base"),
                           load_safetensors(dir_ / "dense" / "model.safetensors")
                               .tensors.at("blocks.0.mlp.fc1.weight")));
  EXPECT_EQ(init.tensors.at("model.blocks.0.mlp.fc1.delta_positions").scalar_type(), torch::kLong);

  const auto moe = testing::run_cli("upcycle " + (dir_ / "dense").string() + " --to moe --out " +
                                    (dir_ / "moe").string() + " --set ffn.num_experts=4");
  ASSERT_EQ(moe.exit_code, 0) << moe.output;
  const auto full_experts = testing::printed_json(moe.output)["params_upcycled"].get<int64_t>();
  const auto run = dir_ / "ders-run";
  const auto trained = testing::run_cli("train --init " + up.string() + " --out " + run.string() +
                                        " --set train.max_steps=2");
  ASSERT_EQ(trained.exit_code, 0) << trained.output;
  const auto run_summary = json::parse(testing::read_text(run / "summary.json"));
  const auto trainable = run_summary["params_train"].get<int64_t>();
  EXPECT_EQ(trainable, summary["params_upcycled"].get<int64_t>());
  EXPECT_LT(trainable, full_experts);
  EXPECT_GT(run_summary["params_stored"].get<int64_t>(), trainable);  // + the positions
  const auto info = testing::run_cli("info --json " + run.string());
  ASSERT_EQ(info.exit_code, 0) << info.output;
  EXPECT_EQ(testing::printed_json(info.output)["params_stored"], run_summary["params_stored"]);

  const auto fused = dir_ / "ders-exfusion";
  const auto one_command = testing::run_cli(
      "train --data " + dir_.string() + " --out " + fused.string() + kTinyRunArgs +
      " ffn.kind=ders-exfusion ffn.variant=dw ffn.num_experts=3 ffn.delta=low-rank "
      "ffn.delta_rank=2 init.from=" +
      (dir_ / "dense").string());
  ASSERT_EQ(one_command.exit_code, 0) << one_command.output;
  const auto fused_summary = json::parse(testing::read_text(fused / "summary.json"));
  EXPECT_LE(fused_summary["fused_max_abs_logit_diff"].get<double>(), 1e-4);
  EXPECT_TRUE(fs::exists(fused / "model.safetensors"));
}

// The comparison's baseline: a dense run continued from the dense checkpoint loads its
// weights as they are (nothing to upcycle).
TEST_F(UpcycleCli, ADenseRunContinuesFromADenseCheckpoint) {
  const auto run = dir_ / "continued";
  const auto result =
      testing::run_cli("train --data " + dir_.string() + " --out " + run.string() + kTinyRunArgs +
                       " ffn.kind=dense train.max_steps=1 init.from=" + (dir_ / "dense").string());
  ASSERT_EQ(result.exit_code, 0) << result.output;
  EXPECT_EQ(start_line(run)["init"]["method"], "loaded");
}

TEST_F(UpcycleCli, OnlyDenseModelsOfTheSameArchitectureUpcycle) {
  ASSERT_EQ(testing::run_cli("train --data " + dir_.string() + " --out " + (dir_ / "mb").string() +
                             " --set ffn.kind=exfusion" + kTinyRunArgs)
                .exit_code,
            0);
  const auto state = dir_ / "mb" / "state.safetensors";
  const auto refused =
      testing::run_cli("upcycle " + state.string() + " --to moe --out " + (dir_ / "x").string());
  EXPECT_EQ(refused.exit_code, 2) << refused.output;
  EXPECT_NE(refused.output.find("upcycling starts from a dense model"), std::string::npos)
      << refused.output;
  const auto other = testing::run_cli(
      "train --data " + dir_.string() + " --out " + (dir_ / "wide").string() + kTinyRunArgs +
      " model.embed_dim=32 ffn.kind=moe init.from=" + (dir_ / "dense").string());
  EXPECT_EQ(other.exit_code, 2) << other.output;
  EXPECT_NE(other.output.find("the upcycled model needs"), std::string::npos) << other.output;
  EXPECT_FALSE(fs::exists(dir_ / "wide" / "config.json"));
}

}  // namespace
}  // namespace exfusion
