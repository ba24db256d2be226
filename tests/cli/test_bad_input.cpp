// Bad input from the command line: each case exits with code 2, names the file or option
// and what was expected, and leaves no partial output behind.
#include <gtest/gtest.h>

#include <zlib.h>
#include <chrono>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <tuple>

#include <cstdio>

#include "../support/cli.h"
#include "exfusion/io/safetensors.h"

namespace exfusion {
namespace {

using testing::run_cli;

// A tiny, fast model for runs whose output the tests only need to exist.
const std::string kTwoStepTinyRun =
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
    return "train --data " + data_.string() + " --out " + (dir_ / out).string() + " " +
           kTwoStepTinyRun + " " + extra;
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
  expect_error(run_cli(train("--experts 0")), {"ffn.num_experts = 0", "a value in [1, 1024]"});
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

// The bad-input probe's command-line cases (issue 13), each one clear line and exit 2.
TEST_F(BadInput, DeepNestingInConfigAndSetIsAnError) {
  const auto config = dir_ / "deep.json";
  std::ofstream(config) << "{\"train\": " + std::string(60000, '[') + std::string(60000, ']') + "}";
  expect_error(run_cli(train("--config " + config.string())),
               {config.string(), "nested deeper than 64 levels at train"});
  expect_error(
      run_cli(train("--set train.lr=" + std::string(60000, '[') + std::string(60000, ']'))),
      {"--set train.lr", "nested deeper than 64 levels"});
}

TEST_F(BadInput, ValuesBeyondTheirBoundsAreRefusedBeforeAnythingRuns) {
  expect_error(run_cli(train("--set train.threads=100000")),
               {"train.threads = 100000", "a thread count up to 1024"});
  expect_error(run_cli(train("--experts 1000000000")),
               {"ffn.num_experts = 1000000000", "[1, 1024]"});
  expect_error(run_cli(train("--set model.embed_dim=1000000")),
               {"model.embed_dim = 1000000", "[1, 16384]"});
  expect_error(run_cli(train("--set data.crop_padding=1000000")),
               {"data.crop_padding = 1000000", "[0, 256]"});
  expect_error(run_cli(train("--set train.warmup_epochs=1e300")), {"train.warmup_epochs"});
  expect_error(run_cli(train("--set train.epochs=1e17")), {"train.epochs", "an integer"});
  expect_error(run_cli(train("--set train.lr=1e999")), {"train.lr", "expected a number"});
  expect_error(run_cli(train("--layers [0.7]")), {"ffn.layers", "block indices"});
  expect_error(run_cli(train("--set ffn.expert_noise_std=-1")),
               {"ffn.expert_noise_std = -1", "a non-negative number"});
  EXPECT_FALSE(std::filesystem::exists(dir_ / "run"));
}

TEST_F(BadInput, ErrorsQuoteLongValuesBriefly) {
  const auto result = run_cli(train("--set train.device=" + std::string(100000, 'x')));
  expect_error(result, {"train.device", "(100000 characters)"});
  EXPECT_LT(result.output.size(), 1000u);
}

// A misspelt device is a config error naming where it came from; a CUDA device on a machine
// without one is refused where the run starts, naming the field.
TEST_F(BadInput, AMisspeltDeviceNamesItsSource) {
  expect_error(run_cli(train("--set train.device=gpu")),
               {"--set train.device=gpu", "train.device = \"gpu\"", "auto, cpu, cuda or cuda:N"});
  const auto config = dir_ / "device.yaml";
  std::ofstream(config) << "train:\n  device: cuda:x\n";
  expect_error(run_cli(train("--config " + config.string())),
               {"device.yaml", "train.device = \"cuda:x\""});
}

// A small file whose metadata config describes a huge model: refused from the sizes, before
// gigabytes are allocated and initialised to find the first mismatching tensor.
TEST_F(BadInput, CheckpointConfigFarLargerThanItsTensors) {
  ASSERT_EQ(run_cli(train("")).exit_code, 0);
  const auto model = dir_ / "run" / "model.safetensors";
  auto file = load_safetensors(model);
  auto config = nlohmann::json::parse(file.metadata.at("exfusion.config"));
  config["model"]["embed_dim"] = 4096;
  config["model"]["depth"] = 1000;
  config["model"]["num_heads"] = 16;
  file.metadata["exfusion.config"] = config.dump();
  NamedTensors tensors(file.tensors.begin(), file.tensors.end());
  const auto forged = dir_ / "forged.safetensors";
  save_safetensors(forged, tensors, file.metadata);
  const auto started = std::chrono::steady_clock::now();
  expect_error(run_cli("eval " + forged.string() + " --data " + data_.string()),
               {forged.string(), "1000 blocks", "the config does not belong to these tensors"});
  // Generous: building that model would take minutes and about 800 GB.
  EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(60));
  // Small FFNs but a head of a million classes at width 512 (a billion bytes), or a position
  // embedding of 4096² tokens: the parameters outside the FFNs count too.
  for (const auto& [key, value] :
       {std::pair<std::string, int64_t>{"num_classes", 1000000}, {"img_size", 4096}}) {
    auto small_ffns = nlohmann::json::parse(load_safetensors(model).metadata.at("exfusion.config"));
    small_ffns["model"][key] = value;
    if (key == "img_size") small_ffns["model"]["patch_size"] = 1;
    if (key == "num_classes") {
      small_ffns["model"]["embed_dim"] = 512;
      small_ffns["model"]["mlp_ratio"] = 0.01;
    }
    file.metadata["exfusion.config"] = small_ffns.dump();
    save_safetensors(forged, tensors, file.metadata);
    expect_error(run_cli("eval " + forged.string() + " --data " + data_.string()),
                 {forged.string(), "parameters outside them", "does not belong to these tensors"});
  }
}

// A model with NaN weights evaluates (its file is valid), but says so rather than printing a
// bare "test_loss": null.
TEST_F(BadInput, EvaluatingANonFiniteModelWarns) {
  ASSERT_EQ(run_cli(train("")).exit_code, 0);
  auto file = load_safetensors(dir_ / "run" / "model.safetensors");
  file.tensors.at("head.weight").fill_(std::numeric_limits<float>::quiet_NaN());
  const auto diverged = dir_ / "diverged.safetensors";
  save_safetensors(diverged, NamedTensors(file.tensors.begin(), file.tensors.end()), file.metadata);
  const auto result = run_cli("eval " + diverged.string() + " --data " + data_.string());
  EXPECT_EQ(result.exit_code, 0) << result.output;
  EXPECT_NE(result.output.find("exfusion eval: warning: the test loss is "), std::string::npos)
      << result.output;
  EXPECT_NE(result.output.find("nan: the model's outputs are not finite"), std::string::npos)
      << result.output;
}

// A training state whose bookkeeping tensors have the wrong size (with a checksum that
// matches, so only the size is wrong) is a clear error, not an internal one.
TEST_F(BadInput, TrainingStateScalarsOfTheWrongSize) {
  ASSERT_EQ(run_cli(train("")).exit_code, 0);
  const std::vector<std::tuple<std::string, torch::Tensor, std::string>> cases = {
      {"trainer.step", torch::zeros({0}, torch::kInt64), "'trainer.step' is not an int64 scalar"},
      {"trainer.step", torch::zeros({2}, torch::kInt64), "'trainer.step' is not an int64 scalar"},
      {"rng.cpu", torch::zeros({10}, torch::kUInt8), "'rng.cpu' is not a Byte vector of"},
      {"rng.cpu", torch::zeros({5056}, torch::kFloat32), "'rng.cpu' is not a Byte vector of"}};
  for (const auto& [name, value, expected] : cases) {
    auto file = load_safetensors(dir_ / "run" / "state.safetensors");
    file.tensors[name] = value;
    // The checksum the state format keeps: CRC-32 of every tensor's bytes in name order.
    uLong crc = crc32(0L, Z_NULL, 0);
    for (const auto& [name, tensor] : file.tensors) {
      if (tensor.nbytes() == 0) continue;  // crc32() with a null buffer would restart the sum
      crc = crc32(crc, static_cast<const Bytef*>(tensor.data_ptr()),
                  static_cast<uInt>(tensor.nbytes()));
    }
    char checksum[16];
    std::snprintf(checksum, sizeof checksum, "%08lx", static_cast<unsigned long>(crc));
    file.metadata["exfusion.checksum"] = checksum;
    const auto forged = dir_ / "forged.safetensors";
    save_safetensors(forged, NamedTensors(file.tensors.begin(), file.tensors.end()), file.metadata);
    const auto result = run_cli("info " + forged.string());
    EXPECT_EQ(result.exit_code, 2) << result.output;
    EXPECT_NE(result.output.find(expected), std::string::npos) << result.output;
  }
}

// An assignment or a key of 100 000 characters is quoted as its first 60 and its length, from
// --set as from a file; a run's summary nested 200 000 deep is refused on --resume, not walked.
TEST_F(BadInput, LongAssignmentsAndKeysAreQuotedBriefly) {
  const std::string long_value(100000, 'x');
  for (const auto& assignment : {"train.lr=" + long_value, "train." + long_value + "=1"}) {
    const auto result = run_cli(train("--set " + assignment));
    expect_error(result, {"(10000", "characters)"});
    EXPECT_LT(result.output.size(), 2000u) << assignment.substr(0, 20);
  }
  const auto config = dir_ / "long_key.json";
  std::ofstream(config) << "{\"train\": {\"" << long_value << "\": 1}}";
  const auto from_file = run_cli(train("--config " + config.string()));
  expect_error(from_file, {"long_key.json", "(100006 characters)"});
  EXPECT_LT(from_file.output.size(), 2000u);
}

TEST_F(BadInput, AFinishedRunsDeepSummaryIsRefusedOnResume) {
  const auto run = dir_ / "finished";
  std::filesystem::create_directories(run);
  std::ofstream(run / "summary.json") << std::string(200000, '[') << std::string(200000, ']');
  expect_error(run_cli("train --resume " + run.string()), {"summary.json", "nested deeper"});
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
