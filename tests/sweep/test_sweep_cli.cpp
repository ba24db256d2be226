// exfusion sweep from the command line: a two-configuration, two-seed sweep gives a table with
// one row per configuration and both seeds in it; a second invocation skips the finished runs;
// a sweep whose run is killed resumes that run when invoked again; bad sweep files are refused
// naming the file and the field.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "../support/cli.h"
#include "../support/processes.h"

namespace exfusion {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr const char* kSweep = R"(# two configurations, two seeds, a tiny model
set:
  model.embed_dim: 16
  model.depth: 2
  model.num_heads: 2
  train.batch_size: 16
  train.epochs: 1
  train.threads: 1
  train.checkpoint_every: 2
seeds: 2
baseline: dense
configurations:
  - name: dense
    set: {ffn.kind: dense}
  - name: sw
    set: {ffn.kind: exfusion, ffn.variant: sw, ffn.num_experts: 2}
)";

class SweepCli : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::fresh_temp_dir("sweep-cli");
    testing::write_toy_idx_dataset(dir_, 64, 32);
    std::ofstream(dir_ / "tiny.yaml") << kSweep;
  }
  void TearDown() override { testing::remove_tree(dir_); }
  std::string sweep_args(const fs::path& out) const {
    return "sweep " + (dir_ / "tiny.yaml").string() + " --out " + out.string() + " --data " +
           dir_.string();
  }
  fs::path dir_;
};

size_t count(const std::string& text, const std::string& part) {
  size_t n = 0;
  for (auto at = text.find(part); at != std::string::npos; at = text.find(part, at + 1)) ++n;
  return n;
}

TEST_F(SweepCli, TwoConfigurationsTwoSeedsMakeATableAndASecondRunSkipsThem) {
  const auto out = dir_ / "sweep";
  const auto dry = testing::run_cli(sweep_args(out) + " --dry-run");
  ASSERT_EQ(dry.exit_code, 0) << dry.output;
  const auto plan = testing::printed_json(dry.output);
  ASSERT_EQ(plan["runs"].size(), 4U);
  EXPECT_EQ(plan["runs"][0]["state"], "to run");
  EXPECT_EQ(plan["runs"][1]["configuration"], "sw");  // seed-major
  EXPECT_EQ(plan["runs"][1]["seed"], 1);
  EXPECT_FALSE(fs::exists(out / "runs"));

  const auto result = testing::run_cli(sweep_args(out));
  ASSERT_EQ(result.exit_code, 0) << result.output;
  EXPECT_NE(result.output.find("sweep: run 4/4 sw seed 2"), std::string::npos) << result.output;
  EXPECT_NE(result.output.find("ETA"), std::string::npos) << result.output;
  const auto rows = json::parse(testing::read_text(out / "results.json"));
  ASSERT_EQ(rows.size(), 2U);
  for (const auto& row : rows) {
    EXPECT_EQ(row["seeds"], 2) << row.dump();
    EXPECT_EQ(row["planned_seeds"], 2);
    EXPECT_GT(row["accuracy_mean"].get<double>(), 0.0);
    EXPECT_GT(row["ms_per_step_mean"].get<double>(), 0.0);
    EXPECT_GT(row["peak_rss_mib_max"].get<double>(), 10.0);  // a LibTorch process
  }
  EXPECT_TRUE(rows[0]["baseline"].get<bool>());
  EXPECT_TRUE(rows[1].contains("delta_vs_baseline"));
  // sw fuses into the dense model: deployed = the dense row's parameters.
  EXPECT_EQ(rows[1]["params_deployed"], rows[0]["params_train"]);
  EXPECT_GT(rows[1]["params_train"].get<int64_t>(), rows[0]["params_train"].get<int64_t>());
  // ... and the dense model's forward FLOPs.
  EXPECT_GT(rows[0]["gflops_deployed"].get<double>(), 0.0);
  EXPECT_DOUBLE_EQ(rows[1]["gflops_deployed"].get<double>(),
                   rows[0]["gflops_deployed"].get<double>());
  const auto markdown = testing::read_text(out / "table.md");
  EXPECT_EQ(count(markdown, "\n"), 4U) << markdown;  // header, rule, two rows
  EXPECT_NE(markdown.find("| sw | 2/2 |"), std::string::npos) << markdown;
  EXPECT_EQ(count(testing::read_text(out / "table.csv"), "\n"), 3U);
  for (const auto* name : {"dense/seed-1", "dense/seed-2", "sw/seed-1", "sw/seed-2"}) {
    EXPECT_TRUE(fs::exists(out / "runs" / name / "summary.json")) << name;
  }
  // The seeds differ: each run got its own train.seed.
  const auto config_of = [&](const char* name) {
    return json::parse(testing::read_text(out / "runs" / name / "config.json"));
  };
  EXPECT_EQ(config_of("sw/seed-2")["train"]["seed"], 2);
  EXPECT_EQ(config_of("sw/seed-2")["ffn"]["kind"], "exfusion");

  const auto summary_before = testing::read_text(out / "runs" / "sw" / "seed-1" / "summary.json");
  const auto again = testing::run_cli(sweep_args(out));
  ASSERT_EQ(again.exit_code, 0) << again.output;
  EXPECT_EQ(count(again.output, "finished earlier, skipped"), 4U) << again.output;
  EXPECT_EQ(testing::read_text(out / "runs" / "sw" / "seed-1" / "summary.json"), summary_before);
  EXPECT_EQ(testing::read_text(out / "table.md"), markdown);
}

// The first run is killed (SIGKILL at its step 3, after a checkpoint): the sweep stops naming
// it; invoked again, it resumes that run and finishes the rest.
TEST_F(SweepCli, AKilledSweepResumesItsRunWhenInvokedAgain) {
  const auto out = dir_ / "sweep";
  auto child = testing::spawn_cli(sweep_args(out), dir_ / "out.txt", "EXFUSION_KILL_AT=step:3");
  EXPECT_EQ(testing::wait_for(child), 2);
  const auto first = testing::read_text(dir_ / "out.txt");
  EXPECT_NE(first.find("sweep run dense seed 1 failed (killed by signal 9)"), std::string::npos)
      << first;
  EXPECT_FALSE(fs::exists(out / "runs" / "dense" / "seed-1" / "summary.json"));
  const auto resumed = testing::run_cli(sweep_args(out));
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_NE(resumed.output.find("run 1/4 dense seed 1 (resumed)"), std::string::npos)
      << resumed.output;
  EXPECT_NE(testing::read_text(out / "logs" / "dense-seed-1.log").find("resuming from"),
            std::string::npos);
  const auto rows = json::parse(testing::read_text(out / "results.json"));
  EXPECT_EQ(rows[0]["seeds"], 2);
  EXPECT_EQ(rows[1]["seeds"], 2);
}

TEST_F(SweepCli, BadSweepFilesAreRefusedNamingTheFileAndField) {
  const auto refused = [&](const std::string& text) {
    std::ofstream(dir_ / "bad.yaml") << text;
    const auto result = testing::run_cli("sweep " + (dir_ / "bad.yaml").string() + " --out " +
                                         (dir_ / "bad").string() + " --dry-run");
    EXPECT_EQ(result.exit_code, 2) << result.output;
    EXPECT_NE(result.output.find("bad.yaml"), std::string::npos) << result.output;
    return result.output;
  };
  EXPECT_NE(refused("seeds: 2\ngrid: {ffn.num_experts: [2]}\ncolour: red\n").find("'colour'"),
            std::string::npos);
  EXPECT_NE(refused("grid: {ffn.num_experts: [2]}\n").find("no seeds"), std::string::npos);
  EXPECT_NE(refused("seeds: 1\nconfigurations:\n  - {name: a, set: {train.lrr: 1}}\n")
                .find("configuration 'a'"),
            std::string::npos);
  EXPECT_NE(refused("seeds: 1\nbaseline: b\ngrid: {ffn.num_experts: [2, 4]}\n").find("baseline"),
            std::string::npos);
  EXPECT_NE(refused("seeds: 1\nconfigurations:\n  - {name: ../up}\n").find("names a directory"),
            std::string::npos);
  EXPECT_FALSE(fs::exists(dir_ / "bad"));
}

// A grid names its configurations by the keys' last parts and their values.
TEST_F(SweepCli, AGridExpandsEveryCombination) {
  std::ofstream(dir_ / "grid.yaml")
      << "seeds: [7]\nset: {ffn.kind: exfusion}\ngrid:\n  ffn.num_experts: [2, 4]\n"
         "  ffn.variant: [sw, mb]\n";
  const auto dry = testing::run_cli("sweep " + (dir_ / "grid.yaml").string() + " --dry-run");
  ASSERT_EQ(dry.exit_code, 0) << dry.output;
  const auto runs = testing::printed_json(dry.output)["runs"];
  ASSERT_EQ(runs.size(), 4U);
  EXPECT_EQ(runs[0]["configuration"], "num_experts=2,variant=sw");
  EXPECT_EQ(runs[3]["configuration"], "num_experts=4,variant=mb");
  EXPECT_EQ(runs[3]["seed"], 7);
  EXPECT_NE(runs[0]["dir"].get<std::string>().find("runs/sweeps/grid/runs/"), std::string::npos);
}

}  // namespace
}  // namespace exfusion
