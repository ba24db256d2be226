// Callbacks every training run gets without its workflow naming them: each is registered once
// (one line in src/train/run_callbacks.cpp, or a program's own add() before it trains), and the
// train workflow builds them for the writing rank, rewinds the ones whose output grows
// (ResumableOutput) on resume, hands those to the checkpointer, and gives the ones that want it
// the run's final summary. TensorBoard is one.
#pragma once
#include <filesystem>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "exfusion/train/callbacks.h"
#include "exfusion/train/run_config.h"

namespace exfusion {

struct RunCallbackContext {
  const RunConfig& config;
  const std::filesystem::path& run_dir;
};

// Null when the run does not want it (train.tensorboard: false, say).
using RunCallbackFactory =
    std::function<std::unique_ptr<TrainerCallback>(const RunCallbackContext&)>;

class RunCallbackRegistry {
 public:
  // A second factory of the same name replaces the first.
  void add(const std::string& name, RunCallbackFactory factory);
  // Every registered callback this run wants, in registration order.
  std::vector<std::unique_ptr<TrainerCallback>> make(const RunCallbackContext& context) const;

 private:
  std::vector<std::pair<std::string, RunCallbackFactory>> factories_;
};
RunCallbackRegistry& run_callbacks();

// A callback that also takes the run's summary.json once it is final (after the fused model's
// evaluation), at the run's last step.
class ReceivesRunSummary {
 public:
  virtual ~ReceivesRunSummary() = default;
  virtual void on_run_summary(int64_t step, const nlohmann::json& summary) = 0;
};

}  // namespace exfusion
