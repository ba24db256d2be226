// Training-step benchmark (see step_benchmark.h).
#include "exfusion/train/step_benchmark.h"

#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/autograd/profiler_kineto.h>
#include <torch/cuda.h>

#include <chrono>
#include <filesystem>
#include <set>

#include "exfusion/fusion/expert_kernels.h"
#include "exfusion/train/device.h"
#include "exfusion/train/trainer.h"
#include "exfusion/util/atomic_file.h"
#include "exfusion/util/error.h"

namespace exfusion {
namespace {

void synchronize(const torch::Device& device) {
  if (device.is_cuda()) torch::cuda::synchronize(device.index() < 0 ? 0 : device.index());
}

// Runs `steps` more training steps under the Kineto profiler and writes their Chrome trace to
// `path` (through a temporary file, like every output).
void profile_steps(Trainer& trainer, const Batch& batch, const torch::Device& device, int64_t steps,
                   const std::filesystem::path& path) {
  namespace prof = torch::profiler::impl;
  const prof::ProfilerConfig config(prof::ProfilerState::KINETO);
  std::set<prof::ActivityType> activities{prof::ActivityType::CPU};
  if (device.is_cuda()) activities.insert(prof::ActivityType::CUDA);
  torch::autograd::profiler::prepareProfiler(config, activities);
  torch::autograd::profiler::enableProfiler(config, activities);
  for (int64_t i = 0; i < steps; ++i) trainer.step(batch);
  synchronize(device);
  const auto result = torch::autograd::profiler::disableProfiler();
  replace_file_atomically(
      path, [&](const std::filesystem::path& temporary) { result->save(temporary.string()); });
}

}  // namespace

double device_bf16_peak_tflops(const std::string& device_name) {
  // Dense (non-sparse) bf16 peaks from NVIDIA's datasheets.
  if (device_name.find("H100") != std::string::npos) {
    return device_name.find("PCIe") != std::string::npos ? 756.0 : 989.0;
  }
  if (device_name.find("H200") != std::string::npos) return 989.0;
  if (device_name.find("A100") != std::string::npos) return 312.0;
  return 0.0;
}

double device_memory_tbps(const std::string& device_name) {
  if (device_name.find("H100") != std::string::npos) {
    return device_name.find("PCIe") != std::string::npos ? 2.0 : 3.35;
  }
  if (device_name.find("H200") != std::string::npos) return 4.8;
  if (device_name.find("A100") != std::string::npos) return 2.0;
  return 0.0;
}

double exfusion_extra_bytes_per_step(const VisionTransformerOptions& model, int64_t batch_size,
                                     int64_t gemm_bytes) {
  if (model.ffn.kind != FfnKind::kExFusion) return 0.0;
  const auto& ex = model.ffn.exfusion;
  const double n = static_cast<double>(ex.num_experts());
  const double g = static_cast<double>(gemm_bytes);
  const double dim = static_cast<double>(model.embed_dim);
  const double hidden = static_cast<double>(model.hidden_dim());
  // fc1 (dim → hidden) and fc2 (hidden → dim), weights and biases.
  const double values = hidden * (dim + 1) + dim * (hidden + 1);
  const double tokens = static_cast<double>(batch_size * (model.num_patches() + 1));
  double router = 0.0;
  if (ex.variant() == FusionVariant::kMemoryBank) {
    router = 2.0 * tokens * dim * g;
    if (ex.router_per_set()) router += 2.0 * tokens * hidden * g;
  }
  double total = 0.0;
  for (int64_t block = 0; block < model.depth; ++block) {
    if (model.ffn.replaces(block)) total += (32.0 * n - 36.0 + g) * values + router;
  }
  return total;
}

nlohmann::json benchmark_training_step(const RunConfig& config, const BenchmarkOptions& options) {
  if (config.train.cuda_graph && options.warmup_steps <= Trainer::kCudaGraphWarmupSteps) {
    throw InputError("bench: --warmup " + std::to_string(options.warmup_steps) +
                     " with train.cuda_graph: expected at least " +
                     std::to_string(Trainer::kCudaGraphWarmupSteps + 1) +
                     " (eager warm-up steps, then the capture), so that only replays are timed");
  }
  const auto device = resolve_device(config.train.device);
  torch::manual_seed(static_cast<uint64_t>(config.train.seed));
  VisionTransformer model(config.model);
  const int64_t params = count_parameters(*model);
  Trainer trainer(config, model, device);
  trainer.set_lr(config.train.lr);
  const auto& m = config.model;
  const Batch batch{torch::randn({config.train.batch_size, m.in_chans, m.img_size, m.img_size}),
                    torch::randint(0, m.num_classes, {config.train.batch_size})};
  // The batch lives on the device already, as a prefetched batch would.
  const Batch on_device{batch.images.to(device), batch.labels.to(device)};

  std::string device_name = "cpu";
  if (device.is_cuda()) {
    const auto index = device.index() < 0 ? c10::cuda::current_device() : device.index();
    // From the first step on: a graph's replays allocate nothing, its capture is where a
    // step's activations show, so a peak over the timed steps alone would leave them out.
    c10::cuda::CUDACachingAllocator::resetPeakStats(index);
    device_name = at::cuda::getDeviceProperties(index)->name;
  }
  for (int64_t i = 0; i < options.warmup_steps; ++i) trainer.step(on_device);
  synchronize(device);
  const auto start = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < options.timed_steps; ++i) trainer.step(on_device);
  synchronize(device);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  const double images = static_cast<double>(config.train.batch_size * options.timed_steps);
  const double images_per_s = images / seconds;
  // Training ≈ 3× the forward FLOPs (forward, and backward for inputs and weights).
  const double tflops = 3.0 * forward_flops_per_image(m) * images_per_s / 1e12;
  const double peak = device_bf16_peak_tflops(device_name);
  // The custom CUDA kernels run only where they were built and the step is on CUDA.
  const bool custom_kernels = device.is_cuda() && expert_kernels_compiled();
  nlohmann::json result = {
      {"model", model_to_json(m)["model"]},
      {"ffn", m.ffn.kind == FfnKind::kExFusion ? to_string(m.ffn.exfusion.variant())
                                               : to_string(m.ffn.kind)},
      {"experts", m.ffn.kind == FfnKind::kDense ? 0
                  : m.ffn.kind == FfnKind::kMoE ? m.ffn.moe.num_experts()
                                                : m.ffn.exfusion.num_experts()},
      {"batch", config.train.batch_size},
      {"device", device_name},
      {"precision", trainer.bf16() ? "bf16" : "fp32"},
      {"expert_kernels", custom_kernels && config.train.expert_kernels},
      {"layer_norm_kernels", custom_kernels && config.train.layer_norm_kernels},
      {"bias_grad_epilogue", custom_kernels && config.train.bias_grad_epilogue},
      {"cuda_graph", trainer.cuda_graph_captured()},
      {"params", params},
      {"warmup_steps", options.warmup_steps},
      {"timed_steps", options.timed_steps},
      {"img_per_s", images_per_s},
      {"ms_per_step", 1000.0 * seconds / static_cast<double>(options.timed_steps)},
      {"tflops", tflops},
      {"mfu", peak > 0 ? nlohmann::json(tflops / peak) : nlohmann::json(nullptr)},
      {"peak_mem_mib", nullptr}};
  if (m.ffn.kind == FfnKind::kMoE) result["top_k"] = m.ffn.moe.top_k();
  result["fast_path_calls"] = trainer.fast_path_calls().to_json();
  // ExFusion's memory-traffic floor beside the measured step (see step_benchmark.h).
  const double extra_bytes =
      exfusion_extra_bytes_per_step(m, config.train.batch_size, trainer.bf16() ? 2 : 4);
  const double bandwidth = device_memory_tbps(device_name);
  result["exfusion_extra_gb"] = extra_bytes / 1e9;
  result["exfusion_floor_ms"] = bandwidth > 0
                                    ? nlohmann::json(extra_bytes / (bandwidth * 1e12) * 1e3)
                                    : nlohmann::json(nullptr);
  if (device.is_cuda()) {
    const auto index = device.index() < 0 ? c10::cuda::current_device() : device.index();
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(index);
    const auto& peak_bytes =
        stats.allocated_bytes[static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE)].peak;
    result["peak_mem_mib"] = static_cast<double>(peak_bytes) / (1024.0 * 1024.0);
  }
  if (!options.profile_trace.empty()) {
    profile_steps(trainer, on_device, device, options.profiled_steps, options.profile_trace);
    result["profile_trace"] = options.profile_trace;
    result["profiled_steps"] = options.profiled_steps;
  }
  return result;
}

}  // namespace exfusion
