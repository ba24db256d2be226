// The causal language-modelling task end to end: a tokenizer trained on a small corpus, the
// task's batches (packed sequences whose targets are the inputs shifted by one, documents
// joined by EOS, a resumed epoch equal to the uninterrupted one, two ranks' halves of one
// process's batches), a model of images refused by name, and a Llama trained from the CLI with
// ExFusion-mb in every FFN, fused with equal logits and resumed bit for bit after a kill.
#include <gtest/gtest.h>

#include <csignal>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "../support/cli.h"
#include "../support/processes.h"
#include "../support/run_comparison.h"
#include "../support/word_corpus.h"
#include "exfusion/tasks/causal_lm.h"
#include "exfusion/text/tokenizer.h"
#include "exfusion/train/run_config.h"
#include "exfusion/util/error.h"

namespace exfusion {
namespace {
namespace fs = std::filesystem;
using nlohmann::json;

class CausalLmTaskTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = testing::fresh_temp_dir("causal-lm-task");
    testing::write_word_corpus(dir_ / "corpus");
    TokenizerTraining training;
    training.corpus = {(dir_ / "corpus" / "*.jsonl").string()};
    training.vocab_size = 360;
    training.out = dir_ / "tokenizer.model";
    train_tokenizer(training);
  }
  static void TearDownTestSuite() { testing::remove_tree(dir_); }

  static json config_json() {
    return {{"task", "causal_lm"},
            {"model",
             {{"kind", "llama"},
              {"vocab_size", 384},
              {"hidden_size", 32},
              {"intermediate_size", 48},
              {"num_hidden_layers", 2},
              {"num_attention_heads", 4},
              {"num_key_value_heads", 2},
              {"max_position_embeddings", 64},
              {"sequence_length", 40}}},
            {"data",
             {{"train", (dir_ / "corpus" / "*.jsonl").string()},
              {"tokenizer", (dir_ / "tokenizer.model").string()},
              {"validation_share", 0.05},
              {"validation_samples", 16}}},
            {"train", {{"batch_size", 8}, {"seed", 2}}}};
  }
  static RunConfig config(const json& values = config_json()) {
    auto config = default_run_config();
    apply_config(config, values, "test");
    config.validate({"test", ""});
    return config;
  }
  static inline fs::path dir_;
};

TEST_F(CausalLmTaskTest, BatchesArePackedSequencesAndTheirNextTokens) {
  auto run = config();
  const auto task = make_task(run);
  auto data = task->load_data(run.data, *run.model.options, /*with_train=*/true);
  ASSERT_TRUE(data.train && data.test);
  EXPECT_GT(data.train->batches_per_epoch(), 2);
  data.train->start_epoch(1);
  const auto first = data.train->next();
  ASSERT_TRUE(first.has_value());
  EXPECT_EQ(first->inputs.sizes().vec(), (std::vector<int64_t>{8, 40}));
  EXPECT_EQ(first->targets.sizes().vec(), (std::vector<int64_t>{8, 40}));
  EXPECT_EQ(first->tokens, 8 * 40);
  EXPECT_FALSE(first->decoder_inputs.defined());
  // The targets are the inputs one position on: one chunk of 41 tokens per sample.
  EXPECT_TRUE(torch::equal(first->targets.narrow(1, 0, 39), first->inputs.narrow(1, 1, 39)));
  // No sentinels: every id is one of the tokenizer's 360 pieces.
  EXPECT_LT(first->inputs.max().item<int64_t>(), 360);
  data.train->next();
  const auto third = data.train->next();
  ASSERT_TRUE(third.has_value());
  // Documents (a sentence each, at most 30 words of at most 8 letters: a few hundred tokens at
  // the very most) are joined by EOS (1): two batches' 16 chunks of 41 tokens hold some.
  EXPECT_GT((first->inputs.eq(1).sum() + third->inputs.eq(1).sum()).item<int64_t>(), 0);
  data.train->start_epoch(1, 2);
  const auto resumed = data.train->next();
  ASSERT_TRUE(resumed.has_value());
  EXPECT_TRUE(torch::equal(third->inputs, resumed->inputs));
  // Rank 1 of 2 (4 each) reads the second half of each global batch of 8.
  auto two = config_json();
  two["train"]["batch_size"] = 4;
  auto ranked = config(two);
  const auto second_rank = make_task(ranked, DataShard{1, 2});
  auto shard = second_rank->load_data(ranked.data, *ranked.model.options, true);
  shard.train->start_epoch(1);
  auto whole = config_json();
  whole["train"]["batch_size"] = 8;
  auto one = config(whole);
  auto single = make_task(one)->load_data(one.data, *one.model.options, true);
  single.train->start_epoch(1);
  EXPECT_TRUE(
      torch::equal(shard.train->next()->inputs, single.train->next()->inputs.narrow(0, 4, 4)));
}

TEST_F(CausalLmTaskTest, AModelOfImagesIsRefusedByName) {
  auto values = config_json();
  values["model"] = {{"kind", "vit"}};
  try {
    config(values);
    ADD_FAILURE() << "a ViT was accepted for causal_lm";
  } catch (const InputError& error) {
    EXPECT_NE(std::string(error.what()).find("causal_lm"), std::string::npos) << error.what();
  }
}

// Killed at step 5 and at the first evaluation, resumed twice: the run ends as the
// uninterrupted one did, bit for bit; the fused dense Llama has the trained model's logits.
TEST_F(CausalLmTaskTest, TrainsFromTheCliFusesAndResumesBitIdentical) {
  auto run = config_json();
  run["ffn"] = {{"kind", "exfusion"}, {"variant", "mb"}, {"num_experts", 2}};
  run["train"]["epochs"] = 2;
  run["train"]["lr"] = 3e-3;
  run["train"]["log_every"] = 2;
  run["train"]["checkpoint_every"] = 2;
  run["data"]["samples_per_epoch"] = 48;  // 6 steps an epoch
  const auto config_file = dir_ / "resume.json";
  std::ofstream(config_file) << run.dump();
  const auto args = "train --config " + config_file.string() + " --threads 1 --out ";
  const auto reference = testing::run_cli(args + (dir_ / "resume-ref").string());
  ASSERT_EQ(reference.exit_code, 0) << reference.output;
  const auto summary = json::parse(testing::read_text(dir_ / "resume-ref" / "summary.json"));
  EXPECT_LE(summary["fused_max_abs_logit_diff"].get<double>(), 1e-5);
  EXPECT_TRUE(fs::exists(dir_ / "resume-ref" / "hf" / "config.json"));
  const auto killed = dir_ / "resume-killed";
  auto first =
      testing::spawn_cli(args + killed.string(), dir_ / "resume.txt", "EXFUSION_KILL_AT=step:5");
  ASSERT_EQ(testing::wait_for(first), 128 + SIGKILL) << testing::read_text(dir_ / "resume.txt");
  auto second = testing::spawn_cli("train --resume " + killed.string(), dir_ / "resume.txt",
                                   "EXFUSION_KILL_AT=eval:1");
  ASSERT_EQ(testing::wait_for(second), 128 + SIGKILL) << testing::read_text(dir_ / "resume.txt");
  const auto last = testing::run_cli("train --resume " + killed.string());
  ASSERT_EQ(last.exit_code, 0) << last.output;
  testing::expect_same_run(dir_ / "resume-ref", killed);
}

}  // namespace
}  // namespace exfusion
