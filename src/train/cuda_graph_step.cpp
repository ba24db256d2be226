// Capture and replay of a whole training step (see cuda_graph_step.h). Follows PyTorch's
// recipe for whole-network capture: warm-up on a side stream, capture on that stream with
// autocast's cast cache off, replay on the caller's stream.
#include "exfusion/train/cuda_graph_step.h"

#include <ATen/autocast_mode.h>
#include <ATen/core/CachingHostAllocator.h>
#include <ATen/cuda/CUDAEvent.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>

#include <cuda_runtime_api.h>

#include <exception>
#include <stdexcept>
#include <string>
#include <vector>

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

// What an exception says, without LibTorch's backtrace.
std::string describe(const std::exception_ptr& error) {
  try {
    std::rethrow_exception(error);
  } catch (const c10::Error& e) {
    return e.what_without_backtrace();
  } catch (const std::exception& e) {
    return e.what();
  } catch (...) {
    return "an exception of unknown type";
  }
}

// Undoes what a capture that threw left behind. CUDAGraph::capture_end stops the device and
// pinned-host allocators routing allocations to the graph's pool only once the stream's
// capture has ended well, and the graph releases the pool only then. So a stream still
// capturing (the step threw) is ended and its partial graph dropped, both allocators stop
// routing, and the pool is released unless the graph will do it (its capture ended and its
// instantiation threw). A capture that stopped early never registered the pool: the
// allocators then throw, which says only that there was nothing to undo.
void abandon_capture(at::cuda::CUDAGraph& graph, cudaStream_t stream, c10::DeviceIndex device,
                     at::cuda::MempoolId_t pool) {
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  if (cudaStreamIsCapturing(stream, &status) == cudaSuccess &&
      status != cudaStreamCaptureStatusNone) {
    cudaGraph_t partial = nullptr;
    if (cudaStreamEndCapture(stream, &partial) == cudaSuccess && partial != nullptr) {
      cudaGraphDestroy(partial);
    }
  }
  // Capture errors are not sticky; clearing this one keeps it from being blamed on a later op.
  static_cast<void>(cudaGetLastError());
  bool graph_releases_pool = true;
  try {
    static_cast<void>(graph.pool());  // throws unless the capture ended
  } catch (const c10::Error&) {
    graph_releases_pool = false;
  }
  const auto undo = [](const auto& step) {
    try {
      step();
    } catch (const std::exception&) {  // NOLINT(bugprone-empty-catch): nothing to undo
    }
  };
  auto* host = at::getHostAllocator(at::kCUDA);
  undo([&] { c10::cuda::CUDACachingAllocator::endAllocateToPool(device, pool); });
  undo([&] { host->end_allocate_to_pool(pool); });
  if (!graph_releases_pool) {
    undo([&] { c10::cuda::CUDACachingAllocator::releasePool(device, pool); });
    undo([&] { host->release_pool(pool); });
  }
}

// The batch's device tensors, in one order: what the graph reads from its static copies.
std::vector<torch::Tensor*> tensors_of(Batch& batch) {
  return {&batch.inputs, &batch.targets, &batch.decoder_inputs};
}

bool same_layout(const torch::Tensor& a, const torch::Tensor& b) {
  if (a.defined() != b.defined()) return false;
  return !a.defined() ||
         (a.sizes() == b.sizes() && a.scalar_type() == b.scalar_type() && a.device() == b.device());
}

bool same_layout(Batch a, Batch b) {
  const auto left = tensors_of(a), right = tensors_of(b);
  for (size_t i = 0; i < left.size(); ++i) {
    if (!same_layout(*left[i], *right[i])) return false;
  }
  return true;
}

// Copies `from`'s tensors into `to`'s (same layouts).
void copy_batch(Batch& to, Batch from, bool non_blocking) {
  const auto targets = tensors_of(to), sources = tensors_of(from);
  for (size_t i = 0; i < targets.size(); ++i) {
    if (targets[i]->defined()) targets[i]->copy_(*sources[i], non_blocking);
  }
}

Batch clone_batch(Batch batch) {
  for (auto* tensor : tensors_of(batch)) {
    if (tensor->defined()) *tensor = tensor->clone();
  }
  return batch;
}

}  // namespace

CudaGraphStep::CudaGraphStep(StepFunction step, int64_t warmup_steps)
    : step_(std::move(step)), warmup_left_(warmup_steps) {
  TORCH_CHECK(warmup_steps >= 1, "CudaGraphStep: at least one eager warm-up step is needed");
}

std::pair<torch::Tensor, torch::Tensor> CudaGraphStep::run(const Batch& batch) {
  TORCH_CHECK(batch.inputs.is_cuda() && batch.targets.is_cuda(),
              "CudaGraphStep: the batch must be on a CUDA device");
  if (!capture_error_.empty()) {
    throw std::runtime_error("CUDA graph: the step's capture failed earlier (" + capture_error_ +
                             "); it is not captured again");
  }
  // The first call fixes the shape that is warmed up and captured; a batch of another shape
  // (before or after the capture) runs eagerly on the current stream.
  if (!static_batch_) {
    static_batch_ = clone_batch(batch);
  } else if (!same_layout(batch, *static_batch_)) {
    return step_(batch);
  }
  if (graph_) {
    copy_batch(*static_batch_, batch, /*non_blocking=*/true);
    graph_->replay();
    return static_outputs_;
  }
  const auto device = batch.inputs.device();
  if (!side_stream_) {
    side_stream_ = c10::cuda::getStreamFromPool(/*isHighPriority=*/false, device.index());
  }
  if (warmup_left_ > 0) {
    --warmup_left_;
    return run_on_side_stream(batch);
  }
  capture(batch);
  // Capturing records the step without running it: this replay is the step.
  graph_->replay();
  return static_outputs_;
}

std::pair<torch::Tensor, torch::Tensor> CudaGraphStep::run_on_side_stream(const Batch& batch) {
  const auto current = c10::cuda::getCurrentCUDAStream(batch.inputs.device().index());
  wait_for(*side_stream_, current);
  std::pair<torch::Tensor, torch::Tensor> outputs;
  {
    const c10::cuda::CUDAStreamGuard guard(*side_stream_);
    outputs = step_(batch);
  }
  wait_for(current, *side_stream_);
  // Allocated on the side stream, read on the caller's: their memory must not be reused on
  // the side stream before the caller is done with them.
  outputs.first.record_stream(current);
  outputs.second.record_stream(current);
  return outputs;
}

void CudaGraphStep::capture(const Batch& batch) {
  const c10::cuda::CUDAGuard device_guard(batch.inputs.device());
  const auto device_index = batch.inputs.device().index();
  // What the warm-up left in the allocator's cache goes back first, so that the graph's
  // private pool does not sit beside a second copy of a step's activations.
  c10::cuda::device_synchronize();
  c10::cuda::CUDACachingAllocator::emptyCache();
  copy_batch(*static_batch_, batch, /*non_blocking=*/false);
  auto graph = std::make_unique<at::cuda::CUDAGraph>();
  // A pool of our own, so that a failed capture can release it (see abandon_capture).
  const auto pool = at::cuda::graph_pool_handle();
  const auto current = c10::cuda::getCurrentCUDAStream(device_index);
  wait_for(*side_stream_, current);
  {
    const c10::cuda::CUDAStreamGuard guard(*side_stream_);
    const AutocastCacheOff cache_off;
    try {
      graph->capture_begin(pool);
      static_outputs_ = step_(*static_batch_);
      graph->capture_end();
    } catch (...) {
      abandon_capture(*graph, side_stream_->stream(), device_index, pool);
      // A capture records kernels without running them, so this step computed nothing and
      // left gradients that were never written: it cannot go on eagerly either, and
      // capturing again would fail the same way.
      capture_error_ = describe(std::current_exception());
      throw std::runtime_error(
          "CUDA graph: capturing the training step failed: " + capture_error_ +
          ". A captured step must not wait for the host (.item(), a copy to the CPU, a "
          "data-dependent shape); train without a graph with --set train.cuda_graph=false");
    }
  }
  wait_for(current, *side_stream_);
  graph_ = std::move(graph);
}

}  // namespace exfusion
