// Bad input from the command line: each case exits with code 2, names the file or option
// and what was expected, and leaves no partial output behind.
#include <gtest/gtest.h>

#include "../support/cli.h"

namespace exfusion {
namespace {

using testing::run_cli;

// A tiny, fast model for runs whose output the tests only need to exist.
const std::string kTinyRun =
    "--set model.embed_dim=16 model.depth=1 model.num_heads=2 train.max_steps=2 "
    "train.batch_size=8 train.epochs=1 --threads 1";

class BadInput : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::fresh_temp_dir(::testing::UnitTest::GetInstance()->current_test_info()->name());
    data_ = dir_ / "data";
    std::filesystem::create_directories(data_);
    testing::write_toy_idx_dataset(data_, 64, 32);
  }
  void TearDown() override { testing::remove_tree(dir_); }

  void expect_error(const testing::CliResult& result, const std::vector<std::string>& phrases) {
    EXPECT_EQ(result.exit_code, 2) << result.output;
    EXPECT_NE(result.output.find("exfusion: error:"), std::string::npos) << result.output;
    for (const auto& phrase : phrases) {
      EXPECT_NE(result.output.find(phrase), std::string::npos)
          << "missing '" << phrase << "' in: " << result.output;
    }
    EXPECT_TRUE(testing::temp_files_in(dir_).empty());
  }

  std::string train(const std::string& extra, const std::string& out = "run") {
    return "train --data " + data_.string() + " --out " + (dir_ / out).string() + " " + kTinyRun +
           " " + extra;
  }

  std::filesystem::path dir_, data_;
};

TEST_F(BadInput, MissingDatasetDirectory) {
  const auto missing = dir_ / "nowhere";
  expect_error(run_cli("train --data " + missing.string() + " --out " + (dir_ / "run").string()),
               {missing.string(), "train-images-idx3-ubyte"});
  EXPECT_FALSE(std::filesystem::exists(dir_ / "run" / "config.json"));
}

TEST_F(BadInput, TruncatedImages) {
  const auto images = data_ / "train-images-idx3-ubyte";
  std::filesystem::resize_file(images, std::filesystem::file_size(images) - 100);
  expect_error(run_cli(train("")), {images.string(), "truncated"});
}

TEST_F(BadInput, WrongIdxMagic) {
  const auto labels = data_ / "t10k-labels-idx1-ubyte";
  std::ofstream(labels, std::ios::binary) << "PK\x03\x04 this is a zip archive, not IDX";
  expect_error(run_cli(train("")), {labels.string(), "magic"});
}

TEST_F(BadInput, WrongImageShape) {
  testing::write_toy_idx_dataset(data_, 64, 32, /*side=*/20);
  expect_error(run_cli(train("")), {"train-images-idx3-ubyte", "20×20", "model.img_size"});
}

TEST_F(BadInput, UnknownConfigKey) {
  const auto config = dir_ / "bad.json";
  std::ofstream(config) << R"({"train": {"epoch": 3}})";
  expect_error(run_cli(train("--config " + config.string())),
               {config.string(), "unknown key 'train.epoch'"});
}

TEST_F(BadInput, WrongTypeInConfig) {
  const auto config = dir_ / "bad.json";
  std::ofstream(config) << R"({"ffn": {"num_experts": "four"}})";
  expect_error(run_cli(train("--config " + config.string())),
               {config.string(), "ffn.num_experts", "expected an integer"});
}

TEST_F(BadInput, TooFewExperts) {
  expect_error(run_cli(train("--experts 0")), {"ffn.num_experts = 0", "at least 1"});
}

TEST_F(BadInput, MomentumOutsideUnitInterval) {
  expect_error(run_cli(train("--momentum 1.0")), {"ffn.momentum", "[0, 1)"});
  expect_error(run_cli(train("--momentum -0.5")), {"ffn.momentum", "[0, 1)"});
}

TEST_F(BadInput, UnknownOption) {
  const auto result = run_cli("train --no-such-option");
  EXPECT_EQ(result.exit_code, 2) << result.output;
  EXPECT_NE(result.output.find("--no-such-option"), std::string::npos) << result.output;
}

TEST_F(BadInput, CheckpointOfAnotherArchitecture) {
  ASSERT_EQ(run_cli(train("")).exit_code, 0);
  const auto other = dir_ / "other.json";
  std::ofstream(other) << R"({"model": {"embed_dim": 32, "depth": 1, "num_heads": 2}})";
  const auto model = dir_ / "run" / "model.safetensors";
  expect_error(run_cli("eval " + model.string() + " --config " + other.string()),
               {model.string(), "pos_embed", "shape"});
}

TEST_F(BadInput, ExistingOutputNeedsForce) {
  ASSERT_EQ(run_cli(train("")).exit_code, 0);
  const auto summary = dir_ / "run" / "summary.json";
  const auto before = testing::read_text(summary);
  const auto written = std::filesystem::last_write_time(summary);
  expect_error(run_cli(train("")), {"already exists", "--force"});
  EXPECT_EQ(testing::read_text(summary), before);
  EXPECT_EQ(std::filesystem::last_write_time(summary), written);
  const auto state = dir_ / "run" / "state.safetensors";
  expect_error(run_cli("fuse " + (dir_ / "run").string()), {"model.safetensors", "--force"});
  EXPECT_EQ(run_cli("fuse " + (dir_ / "run").string() + " --force").exit_code, 0);
  EXPECT_EQ(run_cli(train("--force")).exit_code, 0);
  EXPECT_TRUE(std::filesystem::exists(state));
}

}  // namespace
}  // namespace exfusion
