// The training loop for any registered model and task: AdamW (fused kernel) with warmup +
// cosine, the task's loss plus the model's auxiliary losses, gradient clipping, bf16 autocast on
// CUDA, optionally one CUDA graph per step. What happens around the steps (logs, progress,
// checkpoints) is the callbacks' (train/callbacks.h); what a checkpoint holds is TrainingState.
#pragma once
#include <torch/types.h>

#include <functional>
#include <memory>
#include <utility>
#include <vector>

#include "exfusion/data/batch.h"
#include "exfusion/dist/data_parallel.h"
#include "exfusion/layers/capabilities.h"
#include "exfusion/models/model.h"
#include "exfusion/tasks/task.h"
#include "exfusion/train/callbacks.h"
#include "exfusion/train/cuda_graph_step.h"
#include "exfusion/train/optimizer.h"
#include "exfusion/train/run_config.h"
#include "exfusion/train/schedule.h"
#include "exfusion/train/training_state.h"
#include "exfusion/util/fast_paths.h"

namespace exfusion {

class Trainer {
 public:
  // Eager steps before train.cuda_graph captures the step (PyTorch's recipe uses three).
  static constexpr int64_t kCudaGraphWarmupSteps = 3;

  // Moves `model` to `device` and trains it for `task` (the run's one task, whose data the
  // caller loaded: make_task(config, shard)); with `group`, as one of its data-parallel ranks
  // (gradients, global batch statistics, metrics and evaluations averaged over the ranks, each
  // reading its shard of the data). Throws InputError when train.cuda_graph is set for a device
  // that is not CUDA, or together with `group`.
  Trainer(const TrainConfig& config, ModelPtr model, std::shared_ptr<const Task> task,
          torch::Device device, std::shared_ptr<DistributedGroup> group = nullptr);
  // Not copyable or movable: the captured CUDA graph step calls back into this object.
  Trainer(const Trainer&) = delete;
  Trainer& operator=(const Trainer&) = delete;
  ~Trainer();

  // Trains from the current position (step, epoch, batch: zero, or a restored state's) to the
  // configured epochs (or train.max_steps) over `train`, evaluating on `test` after every epoch
  // and telling `callbacks` in order. Stops after the step (or epoch end) at which a callback
  // wants_stop(), with result.interrupted set. Throws InputError when the training set holds
  // less than one batch, or when a logging window's mean loss is not finite (diverged).
  TrainResult fit(BatchSource& train, BatchSource& test,
                  const std::vector<TrainerCallback*>& callbacks);

  // One optimisation step at the current learning rate; returns the task loss and its metric
  // sums (Task::metric_sums) as device tensors, so that nothing waits for the GPU. With
  // train.cuda_graph they are the graph's static outputs: read them before the next step.
  std::pair<torch::Tensor, torch::Tensor> step(const Batch& batch);
  // One optimisation step over train.accumulation_steps micro-batches (their gradients summed,
  // each loss weighted by its share of the step's samples); returns the mean task loss and the
  // summed metric sums.
  std::pair<torch::Tensor, torch::Tensor> step(const std::vector<Batch>& micro_batches);
  // Whether train.cuda_graph has captured the step yet (after kCudaGraphWarmupSteps steps).
  bool cuda_graph_captured() const;
  void set_lr(double lr) { optimizer_.set_lr(lr); }
  double lr() const { return optimizer_.lr(); }

  // The whole training state now, as a checkpoint of the run `run` (its config, which the
  // trainer does not hold, goes into the state), and restoring one (model, optimizer, position,
  // RNG). Restore throws InputError for a state of another architecture or one that cannot
  // resume.
  TrainingState state(const RunConfig& run) const;
  void restore(const TrainingState& state);

  // The model (or `other`, its fused form say) evaluated with this run's task, device,
  // precision and fast-path policy; under data parallelism over every rank's shard (metrics,
  // loss and counts for the whole set; outputs this rank's).
  EvalResult evaluate(BatchSource& source, bool keep_outputs, ModelImpl* other = nullptr);

  int64_t steps_done() const { return step_; }
  int64_t epoch() const { return epoch_; }
  bool bf16() const { return bf16_; }
  const ModelPtr& model() const { return model_; }
  const Task& task() const { return *task_; }
  const torch::Device& device() const { return device_; }
  // The fast-path calls of this trainer's steps and evaluations.
  const FastPathCounters& fast_path_calls() const { return *fast_paths_.counters; }
  // Null in one process.
  DataParallel* data_parallel() const { return data_parallel_.get(); }

 private:
  // Forward, loss, backward, clipping and AdamW on a batch already on the device.
  std::pair<torch::Tensor, torch::Tensor> compute_step(const Batch& batch);
  // Forward and backward of one batch with its loss times `weight`; the gradients add up. Under
  // data parallelism only a step's last batch averages them across the ranks (`last`): the
  // earlier ones add up locally, as DDP's no_sync() leaves them.
  std::pair<torch::Tensor, torch::Tensor> forward_backward(const Batch& batch, double weight,
                                                           bool last = true);
  void apply_update();  // clip, step, zero the gradients

  TrainConfig config_;
  ModelPtr model_;
  std::shared_ptr<const Task> task_;
  torch::Device device_;
  bool bf16_;
  FastPathContext fast_paths_;
  FusedAdamW optimizer_;
  std::unique_ptr<CudaGraphStep> graph_step_;  // null unless train.cuda_graph
  // The expert banks whose weight gradients this trainer's optimizer takes in factored form,
  // each with the sink it installed (train.expert_kernels).
  std::vector<std::pair<TakesFactoredGradient*, std::shared_ptr<FactoredGradient>>> sinks_;
  // The modules that add a loss term, found once: walking the module tree every step would
  // put string-keyed dictionary building on the training step.
  std::vector<const AddsAuxiliaryLoss*> auxiliary_losses_;
  // The modules that change their parameters after each optimizer step (EWA), found once.
  std::vector<UpdatesAfterOptimizerStep*> after_step_updates_;
  std::unique_ptr<DataParallel> data_parallel_;  // null in one process
  int64_t step_ = 0;
  int64_t epoch_ = 0;           // the epoch of the next batch
  int64_t batch_in_epoch_ = 0;  // the next batch's index in it
  TrainProgress progress_;      // the open logging window and the times so far
  // Inside fit: writes the open window's sums, read from the device, into a progress.
  std::function<void(TrainProgress&)> window_sums_;
};

}  // namespace exfusion
