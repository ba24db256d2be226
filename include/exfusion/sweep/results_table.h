// A sweep's table from its runs' summary.json files: per configuration, mean ± std over seeds
// of the task's headline metric (summary.json's headline_metric: test accuracy for images; the
// fused model's where the model fuses), trainable and deployed
// parameters, ms per step and peak memory, and each row's difference to the baseline with
// Welch's t-test p-value, in Markdown, CSV and JSON.
#pragma once
#include <nlohmann/json.hpp>
#include <string>

#include "exfusion/sweep/sweep_plan.h"

namespace exfusion {

// The file beside a run's outputs where the sweep records what the child process used.
inline constexpr const char* kSweepResourcesFile = "sweep_resources.json";

struct SweepTable {
  nlohmann::json rows = nlohmann::json::array();  // one object per configuration, in order
  std::string markdown;
  std::string csv;
  std::string metric;  // the headline metric the rows compare (its <metric>_mean, _std keys)
};

// Runs without a summary.json yet are left out of their row (its `seeds` says how many of
// how many are in).
SweepTable sweep_table(const SweepPlan& plan);

}  // namespace exfusion
