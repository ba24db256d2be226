// exfusion compress from the command line: a dense run upcycled into a MoE and trained, its
// experts compressed against the recorded dense base, the file read by eval, info and
// train --set init.from; ExFusion's unfused experts against their mean; the refusals.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "../support/cli.h"

namespace exfusion {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

using testing::kTinyRunArgs;

int64_t data_bytes(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  uint64_t header = 0;
  in.read(reinterpret_cast<char*>(&header), sizeof header);
  return static_cast<int64_t>(fs::file_size(file) - 8 - header);
}

class DersCompressCli : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::fresh_temp_dir("ders-cli");
    testing::write_toy_idx_dataset(dir_, 64, 32);
    const auto data = " --data " + dir_.string();
    ASSERT_EQ(testing::run_cli("train" + data + " --out " + (dir_ / "dense").string() +
                               " --set ffn.kind=dense" + kTinyRunArgs)
                  .exit_code,
              0);
    ASSERT_EQ(testing::run_cli("upcycle " + (dir_ / "dense").string() + " --to moe --out " +
                               (dir_ / "up").string() + " --set ffn.num_experts=2 2>/dev/null")
                  .exit_code,
              0);
    const auto moe = testing::run_cli("train --init " + (dir_ / "up").string() + " --out " +
                                      (dir_ / "moe").string() + " --set train.max_steps=2");
    ASSERT_EQ(moe.exit_code, 0) << moe.output;
  }
  void TearDown() override { testing::remove_tree(dir_); }
  fs::path dir_;
};

TEST_F(DersCompressCli, CompressedMoeIsEvaluatedDescribedAndTrainedFrom) {
  const auto file = dir_ / "moe-q8.safetensors";
  const auto result =
      testing::run_cli("compress " + (dir_ / "moe").string() + " --method quant --bits 8 --out " +
                       file.string() + " 2>/dev/null");
  ASSERT_EQ(result.exit_code, 0) << result.output;
  const auto summary = testing::printed_json(result.output);
  EXPECT_EQ(summary["banks"], 4);
  EXPECT_EQ(summary["base"]["dense_base"], 4);  // the upcycle's recorded dense FFNs
  EXPECT_EQ(summary["bytes_after"].get<int64_t>(), data_bytes(file));
  EXPECT_LT(summary["bytes_after"].get<int64_t>(), summary["bytes_before"].get<int64_t>());
  // 2 experts of float32 into one float32 base + 8-bit codes + a scale per row: 37.5 % or more.
  EXPECT_LT(summary["expert_bytes_after"].get<double>(),
            0.8 * summary["expert_bytes_before"].get<double>());
  const double before = summary["test_accuracy_before"], after = summary["test_accuracy_after"];
  EXPECT_GE(before, 0.0);
  EXPECT_LE(before, 1.0);
  EXPECT_EQ(summary["samples"], 32);

  const auto eval = testing::run_cli("eval " + file.string());
  ASSERT_EQ(eval.exit_code, 0) << eval.output;
  EXPECT_EQ(testing::printed_json(eval.output)["test_accuracy"].get<double>(), after);
  const auto original = testing::run_cli("eval " + (dir_ / "moe").string() + " --unfused");
  ASSERT_EQ(original.exit_code, 0) << original.output;
  EXPECT_EQ(testing::printed_json(original.output)["test_accuracy"].get<double>(), before);

  const auto info = testing::run_cli("info --json " + file.string());
  ASSERT_EQ(info.exit_code, 0) << info.output;
  const auto described = testing::printed_json(info.output);
  EXPECT_EQ(described["kind"], "ders-compressed");
  EXPECT_EQ(described["ders"]["bits"], 8);

  const auto run = dir_ / "from-compressed";
  const auto trained =
      testing::run_cli("train --out " + run.string() + " --data " + dir_.string() + kTinyRunArgs +
                       " ffn.kind=moe ffn.num_experts=2 init.from=" + file.string());
  ASSERT_EQ(trained.exit_code, 0) << trained.output;
  std::ifstream metrics(run / "metrics.jsonl");
  std::string line;
  std::getline(metrics, line);
  EXPECT_EQ(json::parse(line)["init"]["method"], "ders-decompressed") << line;

  // Ratio 0 keeps every delta entry: the model's test loss within float rounding.
  const auto exact = testing::run_cli("compress " + (dir_ / "moe" / "state.safetensors").string() +
                                      " --method topk --ratio 0 --out " +
                                      (dir_ / "moe-top0.safetensors").string() + " 2>/dev/null");
  ASSERT_EQ(exact.exit_code, 0) << exact.output;
  const auto lossless = testing::printed_json(exact.output);
  EXPECT_NEAR(lossless["test_loss_after"].get<double>(), lossless["test_loss_before"].get<double>(),
              1e-5);
  EXPECT_EQ(lossless["test_accuracy_after"], lossless["test_accuracy_before"]);
  EXPECT_EQ(lossless["bytes_after"].get<int64_t>(), data_bytes(dir_ / "moe-top0.safetensors"));
}

// A MoE upcycled in one command (init.from = the dense run) compresses against that dense run's
// FFN weights, as one upcycled through `exfusion upcycle` does.
TEST_F(DersCompressCli, AOneCommandUpcycledRunCompressesAgainstItsDenseCheckpoint) {
  const auto run = dir_ / "moe-direct";
  ASSERT_EQ(
      testing::run_cli("train --data " + dir_.string() + " --out " + run.string() + kTinyRunArgs +
                       " ffn.kind=moe ffn.num_experts=2 init.from=" + (dir_ / "dense").string())
          .exit_code,
      0);
  const auto result =
      testing::run_cli("compress " + run.string() + " --method topk --ratio 0.5 " + "--out " +
                       (dir_ / "direct.safetensors").string() + " 2>/dev/null");
  ASSERT_EQ(result.exit_code, 0) << result.output;
  EXPECT_EQ(testing::printed_json(result.output)["base"]["dense_base"], 4);  // 2 blocks × fc1, fc2
}

TEST_F(DersCompressCli, ExFusionExpertsCompressAgainstTheirMeanAndBadOptionsAreRefused) {
  ASSERT_EQ(testing::run_cli("train --data " + dir_.string() + " --out " + (dir_ / "exf").string() +
                             kTinyRunArgs + " ffn.kind=exfusion ffn.num_experts=2")
                .exit_code,
            0);
  const auto file = dir_ / "exf-drop.safetensors";
  const auto result =
      testing::run_cli("compress " + (dir_ / "exf").string() + " --method drop --ratio 0.5 --out " +
                       file.string() + " 2>/dev/null");
  ASSERT_EQ(result.exit_code, 0) << result.output;
  const auto summary = testing::printed_json(result.output);
  EXPECT_EQ(summary["base"]["expert_mean"], 4);
  EXPECT_EQ(summary["bytes_after"].get<int64_t>(), data_bytes(file));
  EXPECT_EQ(testing::run_cli("eval " + file.string()).exit_code, 0);

  const auto moe = (dir_ / "moe").string(), out = " --out " + (dir_ / "x.safetensors").string();
  const auto bits = testing::run_cli("compress " + moe + " --method quant --bits 3" + out);
  EXPECT_EQ(bits.exit_code, 2) << bits.output;
  EXPECT_NE(bits.output.find("--bits 3: quantisation takes 8, 4, 2 or 1 bits"), std::string::npos)
      << bits.output;
  for (const auto* ratio : {"1", "-0.2"}) {
    const auto refused =
        testing::run_cli("compress " + moe + " --method topk --ratio " + ratio + out);
    EXPECT_EQ(refused.exit_code, 2) << refused.output;
    EXPECT_NE(refused.output.find("must be in [0, 1)"), std::string::npos) << refused.output;
  }
  const auto again = testing::run_cli("compress " + moe + " --method topk --out " + file.string());
  EXPECT_EQ(again.exit_code, 2) << again.output;
  EXPECT_FALSE(fs::exists(dir_ / "x.safetensors"));
}

}  // namespace
}  // namespace exfusion
