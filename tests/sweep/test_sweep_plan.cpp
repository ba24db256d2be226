// The shipped sweep files (configs/sweeps/) expand into valid runs: every run's config builds,
// 3 seeds at least, the baseline is one of the configurations, and each run's assignments end
// with its seed and the command line's keys. A configuration with a base of its own (another
// model) runs from that file, the others from the sweep's.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>

#include "../support/cli.h"
#include "exfusion/sweep/sweep_plan.h"
#include "exfusion/util/error.h"

namespace exfusion {
namespace {

namespace fs = std::filesystem;

TEST(SweepPlan, ShippedSweepsExpandIntoValidRuns) {
  const auto dir = fs::path(EXFUSION_SOURCE_DIR) / "configs" / "sweeps";
  std::set<std::string> found;
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (entry.path().extension() != ".yaml") continue;
    const auto plan = read_sweep_plan(entry.path(), "/tmp/unused", {"train.threads=1"});
    found.insert(entry.path().stem().string());
    EXPECT_GE(plan.seeds.size(), 3U) << entry.path();
    EXPECT_EQ(plan.runs.size(), plan.seeds.size() * plan.configurations.size()) << entry.path();
    EXPECT_NE(std::find(plan.configurations.begin(), plan.configurations.end(), plan.baseline),
              plan.configurations.end());
    for (const auto& run : plan.runs) {
      ASSERT_GE(run.assignments.size(), 2U);
      EXPECT_EQ(run.assignments.back(), "train.threads=1");
      EXPECT_EQ(run.assignments[run.assignments.size() - 2],
                "train.seed=" + std::to_string(run.seed));
    }
  }
  for (const auto* table : {"table1-moe-vs-exfusion", "table2-backbones", "table6-variants",
                            "table7-experts", "table8-momentum", "table9-router", "table10-layers",
                            "table11-step-time", "upcycling", "ewa-study"}) {
    EXPECT_EQ(found.count(table), 1U) << table;
  }
  const auto momentum = read_sweep_plan(dir / "table8-momentum.yaml", "/tmp/unused");
  EXPECT_EQ(momentum.configurations,
            (std::vector<std::string>{"momentum=0.9", "momentum=0.93", "momentum=0.95",
                                      "momentum=0.97", "momentum=0.99"}));
  EXPECT_EQ(momentum.baseline, "momentum=0.95");
  const auto study = read_sweep_plan(dir / "ewa-study.yaml", "/tmp/unused");
  EXPECT_EQ(study.compare_also, std::vector<std::string>{"ewa-b0.3"});
  EXPECT_EQ(study.seeds.size(), 5U);
}

TEST(SweepPlan, CompareAlsoNamesItsConfigurations) {
  const auto dir = testing::fresh_temp_dir("sweep-plan-compare-also");
  const auto write = [&](const std::string& also) {
    std::ofstream(dir / "sweep.yaml")
        << "seeds: 3\ncompare_also: " << also
        << "\nconfigurations:\n  - {name: dense, set: {ffn.kind: dense}}\n"
           "  - {name: ewa, set: {ffn.kind: ewa}}\n";
    return dir / "sweep.yaml";
  };
  EXPECT_EQ(read_sweep_plan(write("ewa"), dir).compare_also, std::vector<std::string>{"ewa"});
  EXPECT_EQ(read_sweep_plan(write("[ewa, dense]"), dir).compare_also,
            (std::vector<std::string>{"ewa", "dense"}));
  try {
    read_sweep_plan(write("[moe]"), dir);
    ADD_FAILURE() << "compare_also naming no configuration was accepted";
  } catch (const InputError& error) {
    EXPECT_NE(std::string(error.what()).find("compare_also"), std::string::npos) << error.what();
    EXPECT_NE(std::string(error.what()).find("moe"), std::string::npos) << error.what();
  }
  testing::remove_tree(dir);
}

TEST(SweepPlan, AConfigurationWithItsOwnBaseRunsFromIt) {
  const auto dir = testing::fresh_temp_dir("sweep-plan-base");
  const auto configs = fs::path(EXFUSION_SOURCE_DIR) / "configs";
  std::ofstream(dir / "models.yaml")
      << "base: " << (configs / "fmnist-vit-mb.yaml").string()
      << "\nseeds: 3\nconfigurations:\n"
         "  - {name: vit, set: {ffn.kind: dense}}\n"
         "  - {name: swin, base: "
      << (configs / "fmnist-swin-dense.yaml").string() << ", set: {train.epochs: 1}}\n";
  const auto plan = read_sweep_plan(dir / "models.yaml", dir / "out");
  ASSERT_EQ(plan.runs.size(), 6U);
  EXPECT_EQ(plan.runs[0].base_config, configs / "fmnist-vit-mb.yaml");
  EXPECT_EQ(plan.runs[1].base_config, configs / "fmnist-swin-dense.yaml");
  // A key the configuration's own model does not have is refused, naming the configuration.
  std::ofstream(dir / "wrong.yaml")
      << "seeds: 3\nconfigurations:\n  - {name: swin, base: "
      << (configs / "fmnist-swin-dense.yaml").string() << ", set: {model.depth: 3}}\n";
  try {
    read_sweep_plan(dir / "wrong.yaml", dir / "out");
    ADD_FAILURE() << "a Swin run with a ViT's key was accepted";
  } catch (const InputError& error) {
    EXPECT_NE(std::string(error.what()).find("configuration 'swin'"), std::string::npos)
        << error.what();
  }
  testing::remove_tree(dir);
}

}  // namespace
}  // namespace exfusion
