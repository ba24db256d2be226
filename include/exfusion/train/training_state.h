// Everything a checkpoint holds, in one type with one save and one load: the model (experts,
// fusion weights, banks and routers included), the optimizer's moments and steps, the step
// (the schedule's position), the data order's position, the CPU random generator and the config.
// A loaded state continues training exactly where the saved one stopped.
#pragma once
#include <torch/types.h>

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>

#include "exfusion/io/safetensors.h"
#include "exfusion/train/run_config.h"

namespace exfusion {

struct TrainingState {
  // 1: model., optimizer. and trainer.step only (before the data position and RNG were kept);
  // 2: this layout. Format 1 files still load, for evaluation, fusing and info.
  static constexpr int64_t kFormatVersion = 2;

  RunConfig config;
  std::map<std::string, torch::Tensor> model;      // the module's parameters and buffers
  std::map<std::string, torch::Tensor> optimizer;  // FusedAdamW::state() by name
  int64_t step = 0;                                // optimisation steps done
  int64_t epoch = 0;                               // the epoch of the next training batch
  int64_t batch_in_epoch = 0;                      // that batch's index within its epoch
  torch::Tensor cpu_rng;  // torch's default CPU generator (uint8), undefined in format 1
  int64_t format = kFormatVersion;

  // Writes the state atomically (a temporary file, flushed, then renamed).
  void save(const std::filesystem::path& path) const;
  // Throws InputError naming `path` when the file is not a training state, is damaged, or is of
  // a format this build does not know.
  static TrainingState load(const std::filesystem::path& path);
  // Whether training can continue from it (format 2 holds the data position and RNG).
  bool resumable() const { return format >= 2; }
};

}  // namespace exfusion
