// The callbacks every `exfusion train` run has: metrics as JSON lines, the progress bar, the
// checkpointer (rotating checkpoints a killed run resumes from) and the signal watcher.
#pragma once
#include <filesystem>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "exfusion/train/callbacks.h"
#include "exfusion/train/metrics.h"
#include "exfusion/train/run_config.h"

namespace exfusion {

// {"event": "train", step, epoch, lr, loss, <metric>, images_per_s, elapsed_s, and the model's
// metrics (fusion_weights, routing)} per window; {"event": "eval", ...} per evaluation. A resumed
// run cuts the log back to where its checkpoint was taken (ResumableOutput).
class JsonlMetricsCallback : public TrainerCallback, public ResumableOutput {
 public:
  explicit JsonlMetricsCallback(MetricsLog& log) : log_(log) {}
  void on_step(const Trainer& trainer, const StepEvent& event) override;
  void on_eval(const Trainer& trainer, const EvalEvent& event) override;
  std::string output_name() const override;
  nlohmann::json output_position() const override;
  void rewind_output(const nlohmann::json& position) override;

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

// Saves the whole training state (TrainingState) into `<run>/checkpoints/step-<step>.safetensors`
// every `every` steps (0: never mid-epoch), at every epoch's end and when training ends or is
// stopped; keeps the `keep` newest. Each checkpoint records the run's `config` and where the
// `outputs` stood.
class CheckpointCallback : public TrainerCallback {
 public:
  CheckpointCallback(RunConfig config, std::filesystem::path dir, int64_t every, int64_t keep,
                     std::vector<const ResumableOutput*> outputs);
  void on_train_begin(const Trainer& trainer, const TrainBegin& begin) override;
  void on_step(const Trainer& trainer, const StepEvent& event) override;
  void on_epoch_end(const Trainer& trainer, int64_t epoch) override;
  void on_train_end(const Trainer& trainer, const TrainResult& result) override;
  // The checkpoint written last (empty before the first).
  const std::filesystem::path& last_written() const { return last_written_; }

 private:
  void save(const Trainer& trainer);

  RunConfig config_;
  std::filesystem::path dir_;
  int64_t every_;
  int64_t keep_;
  std::vector<const ResumableOutput*> outputs_;
  std::filesystem::path last_written_;
  bool current_ = false;  // the newest checkpoint holds the trainer's state as it is now
};

// Stops training after the current step when SIGINT or SIGTERM arrived (an InterruptGuard
// catches them; util/interrupt_guard.h).
class InterruptCallback : public TrainerCallback {
 public:
  bool wants_stop() const override;
};

}  // namespace exfusion
