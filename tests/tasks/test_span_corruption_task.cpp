// The span-corruption task end to end: a tokenizer trained on a small corpus, the task's
// batches (shapes, sentinels above the corpus' ids, the decoder inputs, a resumed epoch equal to
// the uninterrupted one, validation held out of training), a T5 trained from the CLI with
// ExFusion-mb in both stacks, fused with equal logits, and the errors of a bad data section.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <string>

#include "../support/cli.h"
#include "exfusion/tasks/span_corruption.h"
#include "exfusion/text/tokenizer.h"
#include "exfusion/train/run_config.h"
#include "exfusion/util/error.h"

namespace exfusion {
namespace {
namespace fs = std::filesystem;
using nlohmann::json;

// Made-up words in sentences, one JSON record each, over three shards.
void write_corpus(const fs::path& dir) {
  fs::create_directories(dir);
  std::mt19937 random(5);
  std::vector<std::string> words;
  for (int w = 0; w < 300; ++w) {
    std::string word;
    const auto length = 2 + random() % 7;
    for (size_t c = 0; c < length; ++c) word += static_cast<char>('a' + random() % 26);
    words.push_back(word);
  }
  for (int shard = 0; shard < 3; ++shard) {
    std::ofstream out(dir / ("shard-" + std::to_string(shard) + ".jsonl"));
    for (int line = 0; line < 250; ++line) {
      std::string sentence;
      const auto count = 5 + random() % 25;
      for (size_t k = 0; k < count; ++k) sentence += (k ? " " : "") + words[random() % 300];
      out << json{{"text", sentence + "."}}.dump() << "\n";
    }
  }
}

class SpanCorruptionTaskTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = testing::fresh_temp_dir("span-task");
    write_corpus(dir_ / "corpus");
    TokenizerTraining training;
    training.corpus = {(dir_ / "corpus" / "*.jsonl").string()};
    training.vocab_size = 360;
    training.out = dir_ / "spiece.model";
    train_tokenizer(training);
  }
  static void TearDownTestSuite() { testing::remove_tree(dir_); }

  static json config_json() {
    return {{"task", "span_corruption"},
            {"model",
             {{"kind", "t5"},
              {"vocab_size", 512},
              {"d_model", 32},
              {"d_kv", 8},
              {"d_ff", 48},
              {"num_heads", 4},
              {"num_layers", 2},
              {"num_decoder_layers", 2},
              {"input_length", 64},
              {"target_length", 14}}},
            {"data",
             {{"train", (dir_ / "corpus" / "*.jsonl").string()},
              {"tokenizer", (dir_ / "spiece.model").string()},
              {"validation_share", 0.05},
              {"validation_samples", 16}}},
            {"train", {{"batch_size", 8}, {"seed", 2}}}};
  }
  static RunConfig config() {
    auto config = default_run_config();
    apply_config(config, config_json(), "test");
    config.validate({"test", ""});
    return config;
  }
  static inline fs::path dir_;
};

TEST_F(SpanCorruptionTaskTest, BatchesAreSpanCorruptedChunks) {
  auto run = config();
  const auto task = make_task(run);
  auto data = task->load_data(run.data, *run.model.options, /*with_train=*/true);
  ASSERT_TRUE(data.train && data.test);
  EXPECT_GT(data.train->batches_per_epoch(), 2);
  data.train->start_epoch(1);
  const auto first = data.train->next();
  ASSERT_TRUE(first.has_value());
  EXPECT_EQ(first->inputs.sizes().vec(), (std::vector<int64_t>{8, 64}));
  EXPECT_EQ(first->targets.sizes().vec(), (std::vector<int64_t>{8, 14}));
  EXPECT_EQ(first->tokens, 8 * 14);
  EXPECT_TRUE(torch::equal(first->decoder_inputs, shift_right(first->targets, 0)));
  // The first input sentinel is <extra_id_0> = 360 + 100 − 1 for a tokenizer of 360 pieces; the
  // targets open with it too (the first span is never noise), and end with EOS (1).
  EXPECT_TRUE(first->targets.select(1, 0).eq(459).all().item<bool>());
  EXPECT_TRUE(first->targets.select(1, 13).eq(1).all().item<bool>());
  EXPECT_TRUE(first->inputs.select(1, 63).eq(1).all().item<bool>());
  EXPECT_LE(first->inputs.max().item<int64_t>(), 459);
  data.train->next();
  const auto third = data.train->next();
  // A resumed epoch's batches are those of the uninterrupted epoch.
  data.train->start_epoch(1, 2);
  const auto resumed = data.train->next();
  ASSERT_TRUE(third && resumed);
  EXPECT_TRUE(torch::equal(third->inputs, resumed->inputs));
  EXPECT_TRUE(torch::equal(third->targets, resumed->targets));
  // Another epoch, another order.
  data.train->start_epoch(2);
  EXPECT_FALSE(torch::equal(data.train->next()->inputs, first->inputs));
  EXPECT_LE(data.test->size(), 16);
  EXPECT_GE(data.test->size(), 1);
}

TEST_F(SpanCorruptionTaskTest, BadDataSectionsAreNamed) {
  auto bad = config_json();
  bad["model"]["target_length"] = 20;
  auto run = default_run_config();
  try {
    apply_config(run, bad, "bad.json");
    run.validate({"bad.json", ""});
    FAIL() << "expected an error";
  } catch (const InputError& error) {
    EXPECT_NE(std::string(error.what()).find("set model.target_length = 14"), std::string::npos)
        << error.what();
  }
  auto small_vocab = config_json();
  small_vocab["model"]["vocab_size"] = 400;
  auto small = default_run_config();
  apply_config(small, small_vocab, "small.json");
  const auto task = make_task(small);
  try {
    task->load_data(small.data, *small.model.options, true);
    FAIL() << "expected an error";
  } catch (const InputError& error) {
    EXPECT_NE(std::string(error.what())
                  .find("460 ids (with 100 sentinels), more than "
                        "model.vocab_size = 400"),
              std::string::npos)
        << error.what();
  }
}

// From the CLI: ExFusion-mb in every FFN of both stacks trains, fuses into a dense T5 with the
// trained model's logits, and reports the task's per-token metrics.
TEST_F(SpanCorruptionTaskTest, TrainsFromTheCliAndFuses) {
  auto run = config_json();
  run["ffn"] = {{"kind", "exfusion"}, {"variant", "mb"}, {"num_experts", 2}};
  run["train"]["epochs"] = 1;
  run["train"]["max_steps"] = 6;
  run["train"]["lr"] = 3e-3;
  run["train"]["log_every"] = 2;
  run["data"]["samples_per_epoch"] = 64;
  std::ofstream(dir_ / "run.json") << run.dump();
  const auto out = dir_ / "run";
  const auto result =
      testing::run_cli("train --config " + (dir_ / "run.json").string() + " --out " + out.string());
  ASSERT_EQ(result.exit_code, 0) << result.output;
  std::ifstream summary_file(out / "summary.json");
  const auto summary = json::parse(summary_file);
  EXPECT_LT(summary["fused_max_abs_logit_diff"].get<double>(), 1e-4) << summary.dump();
  EXPECT_TRUE(summary.contains("test_token_accuracy"));
  EXPECT_TRUE(summary.contains("fused_test_perplexity"));
  EXPECT_GT(summary["flops_per_token"].get<double>(), 0.0);
  EXPECT_EQ(summary["headline_metric"]["name"], "perplexity");
  const auto eval = testing::run_cli("eval " + out.string());
  ASSERT_EQ(eval.exit_code, 0) << eval.output;
}

}  // namespace
}  // namespace exfusion
