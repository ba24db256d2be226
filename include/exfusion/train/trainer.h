// The training loop: AdamW (fused kernel) with warmup + cosine, label smoothing, gradient
// clipping, bf16 autocast on CUDA, metrics as JSON lines (fusion weights included) and a
// progress bar. All state a resume needs (model, banks, optimizer, step) lives here.
#pragma once
#include <torch/types.h>

#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <ostream>
#include <utility>
#include <vector>

#include "exfusion/data/loader.h"
#include "exfusion/io/safetensors.h"
#include "exfusion/models/vit.h"
#include "exfusion/train/cuda_graph_step.h"
#include "exfusion/train/metrics.h"
#include "exfusion/train/optimizer.h"
#include "exfusion/train/run_config.h"
#include "exfusion/train/schedule.h"
#include "exfusion/util/fast_paths.h"

namespace exfusion {

struct TrainResult {
  int64_t steps = 0;
  double train_seconds = 0.0;
  double last_loss = 0.0;            // mean over the last logging window
  double last_train_accuracy = 0.0;  // likewise, on augmented training batches
};

// Each FFN's fusion weights by block, e.g. {"blocks.0": {"m": [0.2, ...]}}.
nlohmann::json fusion_weights_json(const VisionTransformer& model);
// Per MoE block, {"blocks.i": {"dropped_fraction": …, "aux_loss": …}} of the last forward
// pass; an empty object for a model without MoE layers. Reads the values back to the host.
nlohmann::json routing_json(const VisionTransformer& model);

class Trainer {
 public:
  // Eager steps before train.cuda_graph captures the step (PyTorch's recipe uses three).
  static constexpr int64_t kCudaGraphWarmupSteps = 3;

  // Throws InputError when train.cuda_graph is set for a device that is not CUDA.
  Trainer(const RunConfig& config, VisionTransformer model, torch::Device device);
  // Not copyable or movable: the captured CUDA graph step calls back into this object.
  Trainer(const Trainer&) = delete;
  Trainer& operator=(const Trainer&) = delete;
  ~Trainer();

  // Trains for the configured epochs (or train.max_steps) over `train`, evaluating on
  // `test` after every epoch. `on_epoch_end` runs after each epoch's evaluation (to save
  // a checkpoint, say).
  TrainResult fit(BatchLoader& train, BatchLoader& test, MetricsLog& log, std::ostream& progress,
                  const std::function<void(int64_t epoch)>& on_epoch_end = {});

  // One optimisation step at the current learning rate; returns the loss and the number of
  // correct predictions as device tensors, so that nothing waits for the GPU. With
  // train.cuda_graph they are the graph's static outputs: read them before the next step.
  std::pair<torch::Tensor, torch::Tensor> step(const Batch& batch);
  // Whether train.cuda_graph has captured the step yet (after kCudaGraphWarmupSteps steps).
  bool cuda_graph_captured() const;
  void set_lr(double lr) { optimizer_.set_lr(lr); }

  // Model (params and buffers, under "model."), optimizer moments (under "optimizer.")
  // and the step counter, as saved in the run directory's training state.
  NamedTensors training_state() const;
  int64_t steps_done() const { return step_; }
  bool bf16() const { return bf16_; }
  const VisionTransformer& model() const { return model_; }
  // The calls of this trainer's steps and fit's evaluations that took or fell back from each
  // CUDA fast path.
  const FastPathCounters& fast_path_calls() const { return *fast_paths_.counters; }

 private:
  // Forward, loss, backward, clipping and AdamW on a batch already on the device.
  std::pair<torch::Tensor, torch::Tensor> compute_step(const torch::Tensor& images,
                                                       const torch::Tensor& labels);

  RunConfig config_;
  // config_.train's fast-path policy and this trainer's counters: the scope of every step and
  // evaluation.
  FastPathContext fast_paths_;
  VisionTransformer model_;
  torch::Device device_;
  bool bf16_;
  FusedAdamW optimizer_;
  std::unique_ptr<CudaGraphStep> graph_step_;  // null unless train.cuda_graph
  // The expert banks whose weight gradients this trainer's optimizer takes in factored form,
  // each with the sink it installed (train.expert_kernels).
  std::vector<std::pair<std::shared_ptr<ExpertBankImpl>, std::shared_ptr<FactoredGradient>>> sinks_;
  int64_t step_ = 0;
};

}  // namespace exfusion
