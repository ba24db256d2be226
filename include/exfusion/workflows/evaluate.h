// `exfusion eval` as a library call: a checkpoint (a run directory's fused model or training
// state, or any of our files) evaluated with its own task on its own data, or on --data-dir.
#pragma once
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

namespace exfusion {

struct EvalRun {
  std::filesystem::path path;  // a run directory or a checkpoint file
  std::string config_file;     // laid over the checkpoint's config when given
  std::string data_dir;        // the task's data from here (Task::data_dir_patch)
  std::string device = "auto";
  std::filesystem::path save_logits;  // write test logits and labels here when set
  bool unfused = false;               // in a run directory: the training state
  bool force = false;
};
// {"checkpoint", "samples", "headline_metric", "test_<metric>" for the loss and every metric
// the task declares, "tokens" where it counts them}; evaluates under the fast-path policy of
// the checkpoint's config (train.*_kernels).
nlohmann::json evaluate_checkpoint(const EvalRun& run);

}  // namespace exfusion
