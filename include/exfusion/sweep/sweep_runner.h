// `exfusion sweep`: runs a sweep's runs one after another, each as a child `exfusion train`
// into its own run directory, so that a run that crashes or is killed costs only itself and
// its peak memory is its own. Resumable: a finished run (summary.json) is skipped, a started
// one is continued with `train --resume`; then the table (sweep/results_table.h) is written.
#pragma once
#include <filesystem>
#include <nlohmann/json.hpp>
#include <ostream>
#include <string>
#include <vector>

namespace exfusion {

struct SweepRun {
  std::filesystem::path file;
  std::filesystem::path out;             // empty: runs/sweeps/<file's stem>
  std::vector<std::string> assignments;  // --set for every run (data.dir=..., train.threads=1)
  bool dry_run = false;                  // list the runs and what would happen to each
};

// Returns the table as JSON (rows per configuration), or the plan for a dry run. A run that
// fails ends the sweep with an InputError naming it, its exit status and its log; a signal
// (SIGINT/SIGTERM, passed on to the run, which checkpoints) throws Interrupted.
nlohmann::json run_sweep(const SweepRun& run, std::ostream& report, std::ostream& progress);

}  // namespace exfusion
