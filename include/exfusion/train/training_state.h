// Everything a checkpoint holds, in one type with one save and one load: the model (experts,
// fusion weights, banks and routers included), the optimizer's moments and steps, the step
// (the schedule's position), the data order's position, the random generators, the loop's
// running window and times, where each output file stood, and the config. A loaded state
// continues training exactly where the saved one stopped, bit for bit on the CPU.
#pragma once
#include <torch/types.h>

#include <array>
#include <cstdint>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "exfusion/io/run_names.h"
#include "exfusion/io/safetensors.h"
#include "exfusion/train/run_config.h"

namespace exfusion {

// The training loop's running totals: the logging window still open (its metrics are
// logged when it closes, possibly after a resume) and what the summary reports at the end.
struct TrainProgress {
  double window_loss_sum = 0.0;  // the task loss summed over the window's steps
  // Each summed metric of the task (TaskMetrics::summed(), named in `metric_names`) summed
  // over the window's samples or tokens.
  std::vector<double> window_metric_sums;
  int64_t window_steps = 0;
  int64_t window_samples = 0;
  int64_t window_tokens = 0;
  double last_loss = 0.0;            // the last closed window's mean loss
  std::vector<double> last_metrics;  // and its summed metrics' means, in the same order
  std::vector<std::string> metric_names;
  double train_seconds = 0.0;  // the training steps' wall time so far, over every resume
  double eval_seconds = 0.0;
  int64_t skipped_samples = 0;  // bad samples the data source skipped so far
};

struct TrainingState {
  // 1: model., optimizer. and trainer.step only (before the data position and RNG were kept);
  // 2: + data position and CPU RNG; 3: + the loop's progress, output positions and a checksum;
  // 4: the window's sums of every metric the task declares, by name, and its tokens (format 3
  // held one count, accuracy's). Formats 1 and 2 still load, for evaluation, fusing and info;
  // format 3 resumes.
  static constexpr int64_t kFormatVersion = kNewestCheckpointFormat;

  RunConfig config;
  std::map<std::string, torch::Tensor> model;      // the module's parameters and buffers
  std::map<std::string, torch::Tensor> optimizer;  // FusedAdamW::state() by name
  int64_t step = 0;                                // optimisation steps done
  int64_t epoch = 0;                               // the epoch of the next training batch
  int64_t batch_in_epoch = 0;                      // that batch's index within its epoch
  TrainProgress progress;
  // Each fast path's calls so far (the summary's fast_path_calls), in kFastPaths' order: the
  // trainer's FastPathCounters when the state was taken.
  std::array<FastPathCalls, kFastPaths.size()> fast_path_calls{};
  torch::Tensor cpu_rng;   // torch's default CPU generator (uint8), undefined in format 1
  torch::Tensor cuda_rng;  // the current CUDA device's generator, when training on CUDA
  // Where each output file stood when the state was taken ({"metrics.jsonl": bytes, ...}),
  // so that a resumed run cuts them back and logs every step exactly once.
  nlohmann::json outputs = nlohmann::json::object();
  // The data-parallel ranks that trained it (1: one process). A resumed run needs as many: the
  // global batch, and so the data position and schedule, depend on it.
  int64_t world_size = 1;
  int64_t format = kFormatVersion;

  // Writes the state atomically (an exclusive temporary file, flushed, renamed, the directory
  // flushed), with a CRC-32 of every tensor's bytes in its metadata.
  void save(const std::filesystem::path& path) const;
  // Throws InputError naming `path` when the file is not a training state, is damaged
  // (truncated, or its tensors do not match their checksum), or is of a format this build
  // does not know.
  static TrainingState load(const std::filesystem::path& path);
  // Whether training can continue from it (format 2 holds the data position and RNG).
  bool resumable() const { return format >= 2; }
};

}  // namespace exfusion
