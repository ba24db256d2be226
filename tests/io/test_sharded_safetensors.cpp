// Sharded safetensors checkpoints (Hugging Face's model-0000i-of-0000n.safetensors with their
// index) read as one file, and each way an index and its shards can disagree refused with the
// file and the tensor named. transformers' own shards are read end to end in
// tests/models/test_llama_huggingface.py.
#include "exfusion/io/sharded_safetensors.h"

#include <gtest/gtest.h>

#include <fstream>
#include <string>

#include "../support/cli.h"
#include "exfusion/util/error.h"

namespace exfusion {
namespace {

namespace fs = std::filesystem;

class ShardedSafetensors : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::fresh_temp_dir("sharded");
    save_safetensors(dir_ / "model-00001-of-00002.safetensors",
                     {{"a.weight", torch::ones({2, 3})}, {"b.weight", torch::zeros({4})}});
    save_safetensors(dir_ / "model-00002-of-00002.safetensors",
                     {{"c.weight", torch::full({5}, 2.0, torch::kBFloat16)}});
  }
  void TearDown() override { testing::remove_tree(dir_); }

  fs::path write_index(const std::string& weight_map) {
    auto path = dir_ / kShardIndexFile;
    std::ofstream(path) << R"({"metadata": {"total_size": 0}, "weight_map": )" << weight_map << "}";
    return path;
  }
  static std::string message_of(const fs::path& index) {
    try {
      load_sharded_safetensors(index);
    } catch (const InputError& error) {
      return error.what();
    }
    return "no error";
  }

  fs::path dir_;
};

TEST_F(ShardedSafetensors, EveryShardsTensorsAreReadAsOneFile) {
  const auto file = load_sharded_safetensors(write_index(
      R"({"a.weight": "model-00001-of-00002.safetensors",
          "b.weight": "model-00001-of-00002.safetensors",
          "c.weight": "model-00002-of-00002.safetensors"})"));
  ASSERT_EQ(file.tensors.size(), 3U);
  EXPECT_TRUE(torch::equal(file.tensors.at("a.weight"), torch::ones({2, 3})));
  EXPECT_EQ(file.tensors.at("c.weight").scalar_type(), torch::kBFloat16);
  EXPECT_TRUE(is_shard_index(dir_ / kShardIndexFile));
  EXPECT_FALSE(is_shard_index(dir_ / "model-00001-of-00002.safetensors"));
}

TEST_F(ShardedSafetensors, DisagreementsWithTheShardsAreRefusedByName) {
  const std::string both = R"("a.weight": "model-00001-of-00002.safetensors",
                              "b.weight": "model-00001-of-00002.safetensors")";
  // A shard the index names that is absent.
  EXPECT_NE(message_of(write_index("{" + both + R"(, "c.weight": "model-00003.safetensors"})"))
                .find("names the shard model-00003.safetensors (for 1 tensors, c.weight among "
                      "them), which is not in"),
            std::string::npos);
  // A tensor its shard does not hold.
  EXPECT_NE(
      message_of(write_index("{" + both + R"(, "c.weight": "model-00001-of-00002.safetensors"})"))
          .find("maps c.weight to model-00001-of-00002.safetensors, which does not hold it"),
      std::string::npos);
  // A tensor a shard holds that the index does not map there.
  EXPECT_NE(message_of(write_index(R"({"a.weight": "model-00001-of-00002.safetensors",
                                       "c.weight": "model-00002-of-00002.safetensors"})"))
                .find("holds b.weight, which the index " + std::string(kShardIndexFile) +
                      " does not map to this shard"),
            std::string::npos);
  // A file name that leaves the directory, a value that is no name, no weight map.
  EXPECT_NE(message_of(write_index(R"({"a.weight": "../model-00001-of-00002.safetensors"})"))
                .find("expected a file name beside the index"),
            std::string::npos);
  EXPECT_NE(message_of(write_index(R"({"a.weight": 3})"))
                .find("weight_map.a.weight: expected the name of a shard file"),
            std::string::npos);
  EXPECT_NE(message_of(write_index("[]")).find("weight_map: expected an object"),
            std::string::npos);
}

}  // namespace
}  // namespace exfusion
