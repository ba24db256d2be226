// A model kind and a task kind from tests/ alone (support/sequence_kinds.h: two stages of
// different widths; token files, per-token loss, a per-token probability and perplexity) go
// through everything a built-in one does, with no edit under src/: `exfusion config`, training
// with ExFusion (sw, dw, mb) and MoE, fuse and export, eval, metrics.jsonl and TensorBoard with
// the task's names, exact resume after a kill, and a two-row sweep table ranked by perplexity.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>

#include "../support/cli.h"
#include "../support/sequence_kinds.h"
#include "../support/training_states.h"
#include "exfusion/cli/cli.h"
#include "exfusion/io/safetensors.h"
#include "exfusion/models/registry.h"
#include "exfusion/train/run_config.h"
#include "exfusion/util/error.h"

namespace exfusion {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr int64_t kVocab = 12;

class PluginModelAndTask : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { testing::register_sequence_kinds(); }
  void SetUp() override {
    dir_ = testing::fresh_temp_dir("plugin-model-task");
    testing::write_sequence_files(dir_ / "data", 96, 24, kVocab, 8, 7);
  }
  void TearDown() override { testing::remove_tree(dir_); }

  // The run's keys: the test-only task and model, a small recipe.
  std::vector<std::string> run_keys(const std::string& ffn) const {
    std::vector<std::string> keys = {"task=sequence_transduction",
                                     "model.kind=two_stage",
                                     "model.vocab=" + std::to_string(kVocab),
                                     "data.dir=" + (dir_ / "data").string(),
                                     "train.batch_size=16",
                                     "train.epochs=2",
                                     "train.lr=0.01",
                                     "train.warmup_epochs=0",
                                     "train.label_smoothing=0",
                                     "train.log_every=2",
                                     "train.checkpoint_every=3",
                                     "train.threads=1"};
    std::istringstream parts(ffn);
    for (std::string key; parts >> key;) keys.push_back(key);
    return keys;
  }

  // The library's entry point, in this process; stdout captured.
  static std::pair<int, std::string> cli(const std::vector<std::string>& args) {
    std::vector<const char*> argv{"exfusion"};
    for (const auto& arg : args) argv.push_back(arg.c_str());
    ::testing::internal::CaptureStdout();
    const int code = run_cli(static_cast<int>(argv.size()), argv.data());
    return {code, ::testing::internal::GetCapturedStdout()};
  }
  int train(const fs::path& out, const std::string& ffn) const {
    std::vector<std::string> args{"train", "--out", out.string(), "--set"};
    for (const auto& key : run_keys(ffn)) args.push_back(key);
    return cli(args).first;
  }
  // This test binary as the CLI in a process of its own (tests/main.cpp), with `env` set.
  static testing::CliResult child(const std::string& env, const std::string& args) {
    const auto self = fs::read_symlink("/proc/self/exe").string();
    const std::string command =
        "EXFUSION_TESTS_AS_CLI=1 " + env + " " + self + " " + args + " 2>&1";
    testing::CliResult result;
    FILE* pipe = ::popen(command.c_str(), "r");
    if (pipe == nullptr) return result;
    std::array<char, 4096> buffer{};
    while (std::fgets(buffer.data(), buffer.size(), pipe) != nullptr)
      result.output += buffer.data();
    const int status = ::pclose(pipe);
    result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    return result;
  }
  std::string set_args(const std::string& ffn) const {
    std::string args = "--set";
    for (const auto& key : run_keys(ffn)) args += " " + key;
    return args;
  }

  fs::path dir_;
};

std::vector<json> records(const fs::path& file, const std::string& event) {
  std::vector<json> out;
  std::ifstream in(file);
  for (std::string line; std::getline(in, line);) {
    const auto record = json::parse(line);
    if (record.value("event", "") == event) out.push_back(record);
  }
  return out;
}

TEST_F(PluginModelAndTask, ConfigListsTheirKeysAndAnotherTasksDataKeyIsNamed) {
  const auto [code, listed] =
      cli({"config", "--set", "task=sequence_transduction", "model.kind=two_stage"});
  ASSERT_EQ(code, 0);
  for (const auto* key : {"data.max_length", "data.dir", "model.stage_widths", "model.vocab"}) {
    EXPECT_NE(listed.find(key), std::string::npos) << key << "\n" << listed;
  }
  EXPECT_EQ(listed.find("data.rand_augment"), std::string::npos) << listed;
  // The image task's keys are not the sequence task's, and the error says whose they are.
  try {
    build_run_config(default_run_config(), {"", {"data.max_length=4"}});
    FAIL() << "the image task took a sequence task's data key";
  } catch (const InputError& error) {
    const std::string what = error.what();
    EXPECT_NE(what.find("data.max_length"), std::string::npos) << what;
    EXPECT_NE(what.find("sequence_transduction"), std::string::npos) << what;
  }
  // The data section follows the task: a changed task starts from its data's defaults.
  const auto config = build_run_config(
      default_run_config(),
      {"", {"task=sequence_transduction", "model.kind=two_stage", "data.max_length=8"}});
  ASSERT_NE(config.data.as<testing::SequenceDataOptions>(), nullptr);
  EXPECT_EQ(config.data.as<testing::SequenceDataOptions>()->max_length, 8);
}

class PluginExFusion : public PluginModelAndTask,
                       public ::testing::WithParamInterface<const char*> {};

TEST_P(PluginExFusion, TrainsFusesExportsAndEvaluatesWithTheTasksMetrics) {
  const auto out = dir_ / "run";
  ASSERT_EQ(
      train(out, std::string("ffn.kind=exfusion ffn.num_experts=3 ffn.variant=") + GetParam()), 0);
  const auto summary = json::parse(testing::read_text(out / "summary.json"));
  EXPECT_EQ(summary["headline_metric"]["name"], "perplexity");
  EXPECT_FALSE(summary["headline_metric"]["higher_is_better"].get<bool>());
  for (const auto* key :
       {"test_perplexity", "test_target_probability", "test_loss", "fused_test_perplexity",
        "final_train_perplexity", "final_train_target_probability"}) {
    EXPECT_TRUE(summary.contains(key)) << key << "\n" << summary.dump(2);
  }
  EXPECT_FALSE(summary.contains("test_accuracy"));
  // Fused equals trained: the two stages' expert sets, of different widths, collapsed.
  EXPECT_LT(summary["fused_max_abs_logit_diff"].get<double>(), 1e-5);
  EXPECT_NEAR(summary["fused_test_perplexity"].get<double>(),
              summary["test_perplexity"].get<double>(), 1e-4);
  // It learned: perplexity below the vocabulary's (a uniform guess), with a wide margin.
  EXPECT_LT(summary["test_perplexity"].get<double>(), 0.75 * kVocab);

  const auto trained = records(out / "metrics.jsonl", "train");
  ASSERT_FALSE(trained.empty());
  for (const auto* key :
       {"loss", "target_probability", "perplexity", "sequences_per_s", "tokens_per_s"}) {
    EXPECT_TRUE(trained.back().contains(key)) << key << "\n" << trained.back().dump();
  }
  EXPECT_NEAR(trained.back()["perplexity"].get<double>(),
              std::exp(trained.back()["loss"].get<double>()), 1e-9);
  const auto evaluated = records(out / "metrics.jsonl", "eval");
  ASSERT_EQ(evaluated.size(), 2U);  // one per epoch
  EXPECT_TRUE(evaluated.back().contains("test_target_probability"));
  std::string events;
  for (const auto& entry : fs::directory_iterator(out / "tb")) {
    events += testing::read_text(entry.path());
  }
  for (const auto* tag : {"train/target_probability", "train/tokens_per_s", "eval/test_perplexity",
                          "summary/fused_test_perplexity"}) {
    EXPECT_NE(events.find(tag), std::string::npos) << tag;
  }

  // The export: the dense two-stage model under its own names, described by its model.json.
  const auto description = json::parse(testing::read_text(out / "model.json"));
  EXPECT_EQ(description["architecture"], "two_stage");
  EXPECT_EQ(description["stage_widths"], json({16, 24}));
  const auto exported = load_safetensors(out / "model.safetensors");
  EXPECT_EQ(exported.tensors.at("stages.1.1.ffn.fc1.weight").sizes(), torch::IntArrayRef({48, 24}));
  EXPECT_EQ(exported.tensors.at("stages.0.0.ffn.fc2.weight").sizes(), torch::IntArrayRef({16, 32}));
  const auto [eval_code, eval_output] = cli({"eval", (out / "model.safetensors").string()});
  ASSERT_EQ(eval_code, 0);
  const auto evaluation = testing::printed_json(eval_output);
  EXPECT_NEAR(evaluation["test_perplexity"].get<double>(),
              summary["fused_test_perplexity"].get<double>(), 1e-9);
  EXPECT_EQ(evaluation["samples"], 24);
  EXPECT_GT(evaluation["tokens"].get<int64_t>(), 24);
}

INSTANTIATE_TEST_SUITE_P(Variants, PluginExFusion, ::testing::Values("sw", "dw", "mb"));

// info lists the FFN sites of both stages with their own widths; bench times steps on the
// task's own form of input (token ids), not on images.
TEST_F(PluginModelAndTask, InfoAndBenchSeeTheStagesAndTheTasksInput) {
  const auto out = dir_ / "run";
  ASSERT_EQ(train(out, "ffn.kind=exfusion ffn.num_experts=2"), 0);
  const auto [info_code, info_output] = cli({"info", out.string(), "--json"});
  ASSERT_EQ(info_code, 0);
  const auto info = testing::printed_json(info_output);
  ASSERT_EQ(info["ffn_sites"].size(), 3U);
  EXPECT_EQ(info["ffn_sites"][0]["path"], "stages.0.0.ffn");
  EXPECT_EQ(info["ffn_sites"][0]["dim"], 16);
  EXPECT_EQ(info["ffn_sites"][2]["path"], "stages.1.1.ffn");
  EXPECT_EQ(info["ffn_sites"][2]["hidden"], 48);

  std::vector<std::string> bench{"bench", "--warmup", "1", "--steps", "2", "--set"};
  for (const auto& key : run_keys("ffn.kind=exfusion ffn.num_experts=2")) bench.push_back(key);
  const auto [bench_code, bench_output] = cli(bench);
  ASSERT_EQ(bench_code, 0);
  const auto timed = testing::printed_json(bench_output);
  EXPECT_GT(timed["ms_per_step"].get<double>(), 0.0);
  EXPECT_EQ(timed["experts"], 2);
  EXPECT_EQ(timed["model"]["kind"], "two_stage");
}

TEST_F(PluginModelAndTask, MoeTrainsWithTheTasksMetricsAndHasNoDenseExport) {
  const auto out = dir_ / "moe";
  ASSERT_EQ(train(out, "ffn.kind=moe ffn.num_experts=4 ffn.top_k=2"), 0);
  const auto summary = json::parse(testing::read_text(out / "summary.json"));
  EXPECT_TRUE(summary.contains("test_perplexity"));
  EXPECT_TRUE(summary.contains("routing")) << summary.dump(2);
  EXPECT_FALSE(fs::exists(out / "model.safetensors"));
}

// Killed with SIGKILL inside a step, in a process of its own, and resumed here: the final
// training state equals the uninterrupted run's, bit for bit.
TEST_F(PluginModelAndTask, ResumesExactlyAfterAKill) {
  const auto straight = dir_ / "straight", killed = dir_ / "killed";
  const std::string ffn = "ffn.kind=exfusion ffn.variant=mb ffn.num_experts=2";
  ASSERT_EQ(train(straight, ffn), 0);
  const auto first =
      child("EXFUSION_KILL_AT=step:8", "train --out " + killed.string() + " " + set_args(ffn));
  ASSERT_NE(first.exit_code, 0) << first.output;  // killed
  ASSERT_TRUE(fs::exists(killed / "checkpoints")) << first.output;
  const auto [code, output] = cli({"train", "--resume", killed.string()});
  ASSERT_EQ(code, 0) << output;
  testing::expect_same_training_state(straight / "state.safetensors", killed / "state.safetensors");
  const auto a = load_safetensors(straight / "model.safetensors");
  const auto b = load_safetensors(killed / "model.safetensors");
  for (const auto& [name, tensor] : a.tensors) {
    EXPECT_TRUE(torch::equal(tensor, b.tensors.at(name))) << name;
  }
  // Every step logged once, as in the run that was not killed.
  EXPECT_EQ(records(killed / "metrics.jsonl", "train").size(),
            records(straight / "metrics.jsonl", "train").size());
}

TEST_F(PluginModelAndTask, ATwoRowSweepTableRanksByTheTasksHeadline) {
  std::ofstream(dir_ / "sweep.yaml") << "set:\n"
                                        "  task: sequence_transduction\n"
                                        "  model.kind: two_stage\n"
                                        "  model.vocab: 12\n"
                                        "  train.batch_size: 16\n"
                                        "  train.epochs: 1\n"
                                        "  train.threads: 1\n"
                                        "seeds: 1\n"
                                        "baseline: dense\n"
                                        "configurations:\n"
                                        "  - name: dense\n"
                                        "    set: {ffn.kind: dense}\n"
                                        "  - name: mb\n"
                                        "    set: {ffn.kind: exfusion, ffn.variant: mb, "
                                        "ffn.num_experts: 2}\n";
  const auto out = dir_ / "sweep";
  const auto result = child("", "sweep " + (dir_ / "sweep.yaml").string() + " --out " +
                                    out.string() + " --data " + (dir_ / "data").string());
  ASSERT_EQ(result.exit_code, 0) << result.output;
  const auto rows = json::parse(testing::read_text(out / "results.json"));
  ASSERT_EQ(rows.size(), 2U);
  for (const auto& row : rows) {
    EXPECT_EQ(row["seeds"], 1) << row.dump();
    EXPECT_GT(row["perplexity_mean"].get<double>(), 1.0) << row.dump();
  }
  const auto table = testing::read_text(out / "table.md");
  EXPECT_NE(table.find("test perplexity |"), std::string::npos) << table;
  EXPECT_EQ(table.find("(%)"), std::string::npos) << table;
}

}  // namespace
}  // namespace exfusion
