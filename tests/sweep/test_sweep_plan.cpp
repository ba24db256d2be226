// The shipped sweep files (configs/sweeps/) expand into valid runs: every run's config builds,
// 3 seeds at least, the baseline is one of the configurations, and each run's assignments end
// with its seed and the command line's keys.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <set>

#include "exfusion/sweep/sweep_plan.h"

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
  for (const auto* table :
       {"table1-moe-vs-exfusion", "table6-variants", "table7-experts", "table8-momentum",
        "table9-router", "table10-layers", "table11-step-time", "upcycling"}) {
    EXPECT_EQ(found.count(table), 1U) << table;
  }
  const auto momentum = read_sweep_plan(dir / "table8-momentum.yaml", "/tmp/unused");
  EXPECT_EQ(momentum.configurations,
            (std::vector<std::string>{"momentum=0.9", "momentum=0.93", "momentum=0.95",
                                      "momentum=0.97", "momentum=0.99"}));
  EXPECT_EQ(momentum.baseline, "momentum=0.95");
}

}  // namespace
}  // namespace exfusion
