// Capture and replay of a whole training step (see cuda_graph_step.h). Follows PyTorch's
// recipe for whole-network capture: warm-up on a side stream, capture on that stream with
// autocast's cast cache off, replay on the caller's stream.
#include "exfusion/train/cuda_graph_step.h"

#include <ATen/autocast_mode.h>
#include <ATen/cuda/CUDAEvent.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>

#include <exception>

namespace exfusion {
namespace {

// Work queued on `waiter` from now on starts after what `producer` has queued so far.
void wait_for(const c10::cuda::CUDAStream& waiter, const c10::cuda::CUDAStream& producer) {
  at::cuda::CUDAEvent event;
  event.record(producer);
  event.block(waiter);
}

// Autocast caches the bf16 copies of weights until its region ends; during capture those
// copies would come from the graph's private pool, so the cache is off while capturing.
class AutocastCacheOff {
 public:
  AutocastCacheOff() : was_enabled_(at::autocast::is_autocast_cache_enabled()) {
    at::autocast::set_autocast_cache_enabled(false);
  }
  ~AutocastCacheOff() { at::autocast::set_autocast_cache_enabled(was_enabled_); }
  AutocastCacheOff(const AutocastCacheOff&) = delete;
  AutocastCacheOff& operator=(const AutocastCacheOff&) = delete;

 private:
  bool was_enabled_;
};

bool same_layout(const torch::Tensor& a, const torch::Tensor& b) {
  return a.sizes() == b.sizes() && a.scalar_type() == b.scalar_type() && a.device() == b.device();
}

}  // namespace

CudaGraphStep::CudaGraphStep(StepFunction step, int64_t warmup_steps)
    : step_(std::move(step)), warmup_left_(warmup_steps) {
  TORCH_CHECK(warmup_steps >= 1, "CudaGraphStep: at least one eager warm-up step is needed");
}

std::pair<torch::Tensor, torch::Tensor> CudaGraphStep::run(const torch::Tensor& images,
                                                           const torch::Tensor& labels) {
  TORCH_CHECK(images.is_cuda() && labels.is_cuda(),
              "CudaGraphStep: the batch must be on a CUDA device");
  // The first call fixes the shape that is warmed up and captured; a batch of another shape
  // (before or after the capture) runs eagerly on the current stream.
  if (!static_images_.defined()) {
    static_images_ = images.clone();
    static_labels_ = labels.clone();
  } else if (!same_layout(images, static_images_) || !same_layout(labels, static_labels_)) {
    return step_(images, labels);
  }
  if (graph_) {
    static_images_.copy_(images, /*non_blocking=*/true);
    static_labels_.copy_(labels, /*non_blocking=*/true);
    graph_->replay();
    return static_outputs_;
  }
  if (!side_stream_) {
    side_stream_ = c10::cuda::getStreamFromPool(/*isHighPriority=*/false, images.device().index());
  }
  if (warmup_left_ > 0) {
    --warmup_left_;
    return run_on_side_stream(images, labels);
  }
  capture(images, labels);
  // Capturing records the step without running it: this replay is the step.
  graph_->replay();
  return static_outputs_;
}

std::pair<torch::Tensor, torch::Tensor> CudaGraphStep::run_on_side_stream(
    const torch::Tensor& images, const torch::Tensor& labels) {
  const auto current = c10::cuda::getCurrentCUDAStream(images.device().index());
  wait_for(*side_stream_, current);
  std::pair<torch::Tensor, torch::Tensor> outputs;
  {
    const c10::cuda::CUDAStreamGuard guard(*side_stream_);
    outputs = step_(images, labels);
  }
  wait_for(current, *side_stream_);
  // Allocated on the side stream, read on the caller's: their memory must not be reused on
  // the side stream before the caller is done with them.
  outputs.first.record_stream(current);
  outputs.second.record_stream(current);
  return outputs;
}

void CudaGraphStep::capture(const torch::Tensor& images, const torch::Tensor& labels) {
  const c10::cuda::CUDAGuard device_guard(images.device());
  const auto device_index = images.device().index();
  // What the warm-up left in the allocator's cache goes back first, so that the graph's
  // private pool does not sit beside a second copy of a step's activations.
  c10::cuda::device_synchronize();
  c10::cuda::CUDACachingAllocator::emptyCache();
  static_images_.copy_(images);
  static_labels_.copy_(labels);
  auto graph = std::make_unique<at::cuda::CUDAGraph>();
  const auto current = c10::cuda::getCurrentCUDAStream(device_index);
  wait_for(*side_stream_, current);
  {
    const c10::cuda::CUDAStreamGuard guard(*side_stream_);
    const AutocastCacheOff cache_off;
    graph->capture_begin();
    try {
      static_outputs_ = step_(static_images_, static_labels_);
    } catch (...) {
      // End the broken capture so that the step's own error is the one reported; the
      // capture's error (it was invalidated) says nothing more.
      try {
        graph->capture_end();
      } catch (const std::exception&) {  // NOLINT(bugprone-empty-catch)
      }
      throw;
    }
    graph->capture_end();
  }
  wait_for(current, *side_stream_);
  graph_ = std::move(graph);
}

}  // namespace exfusion
