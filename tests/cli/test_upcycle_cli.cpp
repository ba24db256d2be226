// exfusion upcycle and train --init from the command line: a dense run upcycled into a MoE by
// Drop-Upcycling and continued, the one-command route through init.from, and the refusals.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "../support/cli.h"
#include "exfusion/io/safetensors.h"

namespace exfusion {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

const std::string& kTiny = testing::kTinyRunArgs;

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
                         " --set ffn.kind=dense" + kTiny);
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
      "train --data " + dir_.string() + " --out " + run.string() + kTiny +
      " ffn.kind=exfusion ffn.variant=sw ffn.num_experts=2 init.method=copy init.from=" +
      (dir_ / "dense").string());
  ASSERT_EQ(result.exit_code, 0) << result.output;
  const auto start = start_line(run);
  EXPECT_EQ(start["init"]["method"], "copy") << start.dump();
  EXPECT_EQ(start["init"]["layers"], 2);
  EXPECT_NE(result.output.find("weights from"), std::string::npos) << result.output;
}

// The comparison's baseline: a dense run continued from the dense checkpoint loads its
// weights as they are (nothing to upcycle).
TEST_F(UpcycleCli, ADenseRunContinuesFromADenseCheckpoint) {
  const auto run = dir_ / "continued";
  const auto result =
      testing::run_cli("train --data " + dir_.string() + " --out " + run.string() + kTiny +
                       " ffn.kind=dense train.max_steps=1 init.from=" + (dir_ / "dense").string());
  ASSERT_EQ(result.exit_code, 0) << result.output;
  EXPECT_EQ(start_line(run)["init"]["method"], "loaded");
}

TEST_F(UpcycleCli, OnlyDenseModelsOfTheSameArchitectureUpcycle) {
  ASSERT_EQ(testing::run_cli("train --data " + dir_.string() + " --out " + (dir_ / "mb").string() +
                             " --set ffn.kind=exfusion" + kTiny)
                .exit_code,
            0);
  const auto state = dir_ / "mb" / "state.safetensors";
  const auto refused =
      testing::run_cli("upcycle " + state.string() + " --to moe --out " + (dir_ / "x").string());
  EXPECT_EQ(refused.exit_code, 2) << refused.output;
  EXPECT_NE(refused.output.find("upcycling starts from a dense model"), std::string::npos)
      << refused.output;
  const auto other = testing::run_cli(
      "train --data " + dir_.string() + " --out " + (dir_ / "wide").string() + kTiny +
      " model.embed_dim=32 ffn.kind=moe init.from=" + (dir_ / "dense").string());
  EXPECT_EQ(other.exit_code, 2) << other.output;
  EXPECT_NE(other.output.find("the upcycled model needs"), std::string::npos) << other.output;
  EXPECT_FALSE(fs::exists(dir_ / "wide" / "config.json"));
}

}  // namespace
}  // namespace exfusion
