// The registry of a run's own callbacks, with TensorBoard on its line (see run_callbacks.h).
#include "exfusion/train/run_callbacks.h"

#include "exfusion/io/run_names.h"
#include "exfusion/train/tensorboard_callback.h"

namespace exfusion {

void RunCallbackRegistry::add(const std::string& name, RunCallbackFactory factory) {
  for (auto& [existing, made] : factories_) {
    if (existing == name) {
      made = std::move(factory);
      return;
    }
  }
  factories_.emplace_back(name, std::move(factory));
}

std::vector<std::unique_ptr<TrainerCallback>> RunCallbackRegistry::make(
    const RunCallbackContext& context) const {
  std::vector<std::unique_ptr<TrainerCallback>> made;
  for (const auto& [name, factory] : factories_) {
    if (auto callback = factory(context)) made.push_back(std::move(callback));
  }
  return made;
}

RunCallbackRegistry& run_callbacks() {
  static RunCallbackRegistry registry = [] {
    RunCallbackRegistry callbacks;
    callbacks.add("tensorboard", [](const RunCallbackContext& run) {
      return run.config.train.tensorboard
                 ? std::make_unique<TensorBoardCallback>(run.run_dir / kTensorBoardDir)
                 : nullptr;
    });
    return callbacks;
  }();
  return registry;
}

}  // namespace exfusion
