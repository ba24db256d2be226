// The span-corruption task end to end: a tokenizer trained on a small corpus, the task's
// batches (shapes, sentinels above the corpus' ids, the decoder inputs, a resumed epoch equal to
// the uninterrupted one, validation held out of training, the same for 1 and 4 tokenising
// workers and from a token file as from its text, two ranks' halves of one process's batches),
// a T5 trained from the CLI with ExFusion-mb in both stacks, fused with equal logits, killed and
// resumed bit for bit, and the errors of bad input.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <string>

#include "../support/batches.h"
#include "../support/cli.h"
#include "../support/processes.h"
#include "../support/run_comparison.h"
#include "../support/word_corpus.h"
#include "exfusion/tasks/span_corruption.h"
#include "exfusion/text/corpus_encoding.h"
#include "exfusion/text/tokenizer.h"
#include "exfusion/train/run_config.h"
#include "exfusion/util/error.h"

namespace exfusion {
namespace {
namespace fs = std::filesystem;
using nlohmann::json;

class SpanCorruptionTaskTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = testing::fresh_temp_dir("span-task");
    testing::write_word_corpus(dir_ / "corpus");
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
  static RunConfig config(const json& values = config_json()) {
    auto config = default_run_config();
    apply_config(config, values, "test");
    config.validate({"test", ""});
    return config;
  }
  // The first `count` training batches of epoch 1 and the validation inputs, as rank `shard`.
  static std::pair<std::vector<Batch>, torch::Tensor> batches_of(const json& values, int64_t count,
                                                                 DataShard shard = {}) {
    auto run = config(values);
    const auto task = make_task(run, shard);
    auto data = task->load_data(run.data, *run.model.options, /*with_train=*/true);
    std::vector<Batch> batches;
    data.train->start_epoch(1);
    for (int64_t i = 0; i < count; ++i) {
      auto batch = data.train->next();
      if (!batch) break;
      batches.push_back(std::move(*batch));
    }
    return {std::move(batches), data.test_inputs.at(0).second};  // "inputs", the encoder's
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

using testing::expect_same_batches;

// Tokenising on 4 threads changes nothing but the speed; a token file that `tokenizer encode`
// wrote from the same text gives the same chunks, hence the same batches and validation.
TEST_F(SpanCorruptionTaskTest, WorkersAndTokenFilesGiveTheTextsBatches) {
  auto values = config_json();
  values["data"]["train"] = (dir_ / "corpus" / "shard-0.jsonl").string();
  values["data"]["validation"] = (dir_ / "corpus" / "shard-2.jsonl").string();
  const auto [one, one_validation] = batches_of(values, 4);
  ASSERT_EQ(one.size(), 4U);
  values["data"]["workers"] = 4;
  const auto [four, four_validation] = batches_of(values, 4);
  expect_same_batches(one, four);
  EXPECT_TRUE(torch::equal(one_validation, four_validation));

  for (const auto* split : {"0", "2"}) {
    CorpusEncoding encoding;
    encoding.corpus = {(dir_ / "corpus" / (std::string("shard-") + split + ".jsonl")).string()};
    encoding.tokenizer = dir_ / "spiece.model";
    encoding.out = dir_ / (std::string("shard-") + split + ".bin");
    encoding.workers = 3;
    encoding.force = true;
    const auto encoded = encode_corpus(encoding);
    EXPECT_EQ(encoded.documents, 250);
    EXPECT_EQ(static_cast<int64_t>(fs::file_size(encoding.out)), 2 * encoded.tokens);
  }
  values["data"]["train"] = (dir_ / "shard-0.bin").string();
  values["data"]["validation"] = (dir_ / "shard-2.bin").string();
  const auto [tokens, tokens_validation] = batches_of(values, 4);
  expect_same_batches(one, tokens);
  EXPECT_TRUE(torch::equal(one_validation, tokens_validation));
}

// Under data parallelism each rank corrupts its half of every global batch: the two halves are
// one process's batch of the same global size.
TEST_F(SpanCorruptionTaskTest, TwoRanksSeeOneProcesssBatches) {
  auto values = config_json();
  const auto [whole, whole_validation] = batches_of(values, 3);
  values["train"]["batch_size"] = 4;  // per rank
  const auto [first, first_validation] = batches_of(values, 3, DataShard{0, 2});
  const auto [second, second_validation] = batches_of(values, 3, DataShard{1, 2});
  ASSERT_EQ(whole.size(), 3U);
  ASSERT_EQ(first.size(), 3U);
  ASSERT_EQ(second.size(), 3U);
  for (size_t i = 0; i < whole.size(); ++i) {
    EXPECT_TRUE(torch::equal(torch::cat({first[i].inputs, second[i].inputs}), whole[i].inputs));
    EXPECT_TRUE(torch::equal(torch::cat({first[i].targets, second[i].targets}), whole[i].targets));
  }
  EXPECT_TRUE(torch::equal(first_validation, whole_validation));
}

// Each class of bad input gets one message naming what is wrong: a corpus with no text, a
// tokenizer file that is not SentencePiece, a token file from a larger vocabulary.
TEST_F(SpanCorruptionTaskTest, BadCorporaAndTokenizersAreNamed) {
  const auto error_of = [](const json& values) -> std::string {
    try {
      batches_of(values, 1);
    } catch (const InputError& error) {
      return error.what();
    }
    return "";
  };
  std::ofstream(dir_ / "empty.txt") << "\n\n";
  auto empty = config_json();
  empty["data"]["train"] = (dir_ / "empty.txt").string();
  EXPECT_NE(error_of(empty).find("empty.txt (its held-out share): no whole chunk of"),
            std::string::npos)
      << error_of(empty);

  std::ofstream(dir_ / "not-a.model") << "this is no SentencePiece model";
  auto bad_tokenizer = config_json();
  bad_tokenizer["data"]["tokenizer"] = (dir_ / "not-a.model").string();
  EXPECT_NE(error_of(bad_tokenizer).find("not-a.model"), std::string::npos)
      << error_of(bad_tokenizer);

  {
    std::ofstream out(dir_ / "wide.bin", std::ios::binary);
    write_tokens(out, std::vector<int64_t>(400, 5000), TokenDtype::kUint16, "wide.bin");
  }
  auto wide = config_json();
  wide["data"]["train"] = (dir_ / "wide.bin").string();
  wide["data"]["validation"] = (dir_ / "wide.bin").string();
  EXPECT_NE(error_of(wide).find("wide.bin: token 0 is id 5000, not below the tokenizer's 360 ids"),
            std::string::npos)
      << error_of(wide);

  std::ofstream(dir_ / "kept.bin") << "kept";
  const auto encode =
      testing::run_cli("tokenizer encode " + (dir_ / "corpus").string() + " --tokenizer " +
                       (dir_ / "spiece.model").string() + " --out " + (dir_ / "kept.bin").string());
  EXPECT_EQ(encode.exit_code, 2) << encode.output;
  EXPECT_NE(encode.output.find("already exists"), std::string::npos) << encode.output;
  EXPECT_EQ(testing::read_text(dir_ / "kept.bin"), "kept");
  const auto encoded = testing::run_cli("tokenizer encode " + (dir_ / "corpus").string() +
                                        " --tokenizer " + (dir_ / "spiece.model").string() +
                                        " --out " + (dir_ / "all.bin").string() + " --workers 2");
  ASSERT_EQ(encoded.exit_code, 0) << encoded.output;
  const auto printed = testing::printed_json(encoded.output);
  EXPECT_EQ(printed["files"], 3);
  EXPECT_EQ(printed["documents"], 750);
  EXPECT_EQ(2 * printed["tokens"].get<int64_t>(),
            static_cast<int64_t>(fs::file_size(dir_ / "all.bin")));
}

// T5 with ExFusion-mb killed inside a step and inside an evaluation, then resumed: its state,
// exports, summary and log equal the uninterrupted run's, bit for bit.
TEST_F(SpanCorruptionTaskTest, AKilledRunResumesBitIdentical) {
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
