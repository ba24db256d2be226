// A whole training step (forward, backward, clipping, AdamW) captured once into a CUDA graph
// and replayed: a replay is one launch from the host instead of thousands of small kernels,
// so small models stop waiting on the CPU. What the step changes must change in place
// (parameters, moments, memory banks, routing statistics, the optimizer's device learning
// rate); inputs are copied into the static tensors the graph was captured with.
#pragma once
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/types.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "exfusion/data/batch.h"

namespace exfusion {

class CudaGraphStep {
 public:
  // A batch on the device → (loss, metric sums), both device tensors. Captured, it reads the
  // batch's tensors (copied into static ones each replay), never its host counts.
  using StepFunction = std::function<std::pair<torch::Tensor, torch::Tensor>(const Batch&)>;

  // The first `warmup_steps` calls run `step` eagerly on the side stream the graph will be
  // captured on (lazy initialisation, cuBLAS workspaces and the optimizer state must exist
  // before capture); the next call captures it and replays it once.
  CudaGraphStep(StepFunction step, int64_t warmup_steps);

  // One training step on `batch` (its tensors on a CUDA device). The first call's shapes are
  // the ones warmed up and captured; a batch of other shapes runs eagerly on the current stream
  // (training drops its last partial batch, so there is none there). The returned tensors are the
  // graph's static outputs after a replay: read or copy them before the next call. A capture
  // that fails gives its memory back and throws std::runtime_error naming the cause; so does
  // every later call, which neither captures again nor runs the step. LibTorch leaves its
  // CUDA random-number generator in capture mode until another capture ends, so random CUDA
  // ops fail after a failed capture: the step is meant to end the run.
  std::pair<torch::Tensor, torch::Tensor> run(const Batch& batch);
  bool captured() const { return graph_ != nullptr; }

 private:
  std::pair<torch::Tensor, torch::Tensor> run_on_side_stream(const Batch& batch);
  void capture(const Batch& batch);

  StepFunction step_;
  int64_t warmup_left_;
  std::optional<c10::cuda::CUDAStream> side_stream_;
  std::unique_ptr<at::cuda::CUDAGraph> graph_;
  std::string capture_error_;          // non-empty once a capture failed
  std::optional<Batch> static_batch_;  // the tensors the graph reads, set by the first call
  std::pair<torch::Tensor, torch::Tensor> static_outputs_;
};

}  // namespace exfusion
