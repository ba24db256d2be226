// What the training loop tells the outside while it runs: a list of callbacks, each told of
// every step, every evaluation, every epoch's end and the end of training. The JSONL log, the
// progress bar and the checkpointer are callbacks (train/standard_callbacks.h); TensorBoard or
// rank-0-only logging are one more each, with no edit to the loop.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "exfusion/tasks/task.h"

namespace exfusion {

class Trainer;

struct TrainBegin {
  int64_t first_step;   // steps done before this fit (a resumed run's)
  int64_t total_steps;  // the step fit stops at
  int64_t epochs;
};

// The training metrics of the steps since the last window closed (every train.log_every steps
// and at the last step); the only point where the loop reads values back from the device.
struct TrainWindow {
  int64_t steps = 0;
  int64_t samples = 0;
  int64_t tokens = 0;  // not padding, where the task counts tokens
  double loss = 0.0;   // mean task loss over the window's steps
  // "loss", then the task's declared metrics over the window's samples or tokens (Task::metrics)
  MetricValues metrics;
  double samples_per_s = 0.0;
  double tokens_per_s = 0.0;
  double elapsed_s = 0.0;        // training time so far (evaluation excluded), over every resume
  int64_t skipped_samples = -1;  // bad samples skipped so far; -1 unless the source may skip
};

struct StepEvent {
  int64_t step;  // steps done, this one included
  int64_t epoch;
  double lr;                  // the learning rate this step used
  const TrainWindow* window;  // non-null when a window closed at this step
  // The epoch's last step (or the run's): its evaluation and on_epoch_end follow at once, and
  // training never stops between the two, so a checkpoint is best taken there.
  bool ends_epoch;
};

struct EvalEvent {
  int64_t step;
  int64_t epoch;
  const EvalResult& result;
};

struct TrainResult {
  int64_t steps = 0;
  double train_seconds = 0.0;  // the training steps' wall time, evaluation excluded
  double eval_seconds = 0.0;   // the per-epoch evaluations' wall time
  double last_loss = 0.0;      // mean over the last logging window
  MetricValues last_metrics;   // likewise, every declared metric (accuracy on training batches)
  bool interrupted = false;    // a callback asked to stop before the last step
};

class TrainerCallback {
 public:
  virtual ~TrainerCallback() = default;
  virtual void on_train_begin(const Trainer& /*trainer*/, const TrainBegin& /*begin*/) {}
  virtual void on_step(const Trainer& /*trainer*/, const StepEvent& /*event*/) {}
  virtual void on_eval(const Trainer& /*trainer*/, const EvalEvent& /*event*/) {}
  virtual void on_epoch_end(const Trainer& /*trainer*/, int64_t /*epoch*/) {}
  virtual void on_train_end(const Trainer& /*trainer*/, const TrainResult& /*result*/) {}
  // Asked after every step and epoch end: true stops training there (a signal arrived, say);
  // the callbacks still see on_train_end, with TrainResult::interrupted set.
  virtual bool wants_stop() const { return false; }
};

// A callback whose output file grows as training runs (the JSONL log, TensorBoard events):
// a checkpoint records where the file stood, and a resumed run cuts it back there, so that
// every step is logged exactly once however often the run was killed.
class ResumableOutput {
 public:
  virtual ~ResumableOutput() = default;
  // The key under which the checkpoint keeps this output's position.
  virtual std::string output_name() const = 0;
  virtual nlohmann::json output_position() const = 0;
  // Cuts the output back to `position` (one output_position() returned, maybe in another
  // process) before the resumed run appends to it.
  virtual void rewind_output(const nlohmann::json& position) = 0;
};

}  // namespace exfusion
