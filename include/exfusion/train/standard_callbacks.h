// The callbacks every `exfusion train` run has: metrics as JSON lines, the progress bar, and the
// checkpointer that keeps the training state of the last finished epoch.
#pragma once
#include <filesystem>
#include <memory>
#include <ostream>
#include <string>

#include "exfusion/train/callbacks.h"
#include "exfusion/train/metrics.h"

namespace exfusion {

// {"event": "train", step, epoch, lr, loss, <metric>, images_per_s, elapsed_s, and the model's
// metrics (fusion_weights, routing)} per window; {"event": "eval", ...} per evaluation.
class JsonlMetricsCallback : public TrainerCallback {
 public:
  explicit JsonlMetricsCallback(MetricsLog& log) : log_(log) {}
  void on_step(const Trainer& trainer, const StepEvent& event) override;
  void on_eval(const Trainer& trainer, const EvalEvent& event) override;

 private:
  MetricsLog& log_;
};

// `train [#####.....] step/total 45% | epoch 1/5 | loss 0.512 | acc 83.1% | img/s | ETA`.
class ProgressBarCallback : public TrainerCallback {
 public:
  explicit ProgressBarCallback(std::ostream& out) : out_(out) {}
  void on_train_begin(const Trainer& trainer, const TrainBegin& begin) override;
  void on_step(const Trainer& trainer, const StepEvent& event) override;
  void on_train_end(const Trainer& trainer, const TrainResult& result) override;

 private:
  std::ostream& out_;
  std::unique_ptr<ProgressBar> bar_;
  int64_t epochs_ = 0;
};

// Saves the whole training state (TrainingState) to `path` at the end of every epoch,
// atomically, so the file always holds the last finished epoch's state.
class CheckpointCallback : public TrainerCallback {
 public:
  explicit CheckpointCallback(std::filesystem::path path) : path_(std::move(path)) {}
  void on_epoch_end(const Trainer& trainer, int64_t epoch) override;

 private:
  std::filesystem::path path_;
};

}  // namespace exfusion
