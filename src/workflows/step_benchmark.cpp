// Training-step benchmark (see step_benchmark.h).
#include "exfusion/workflows/step_benchmark.h"

#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/autograd/profiler_kineto.h>
#include <torch/cuda.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <set>

#include "exfusion/fusion/expert_kernels.h"
#include "exfusion/layers/capabilities.h"
#include "exfusion/models/vit.h"
#include "exfusion/train/trainer.h"
#include "exfusion/util/atomic_file.h"
#include "exfusion/util/device.h"
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

double extra_bytes_per_step(const RunConfig& config, int64_t batch_size, int64_t gemm_bytes) {
  double total = 0.0;
  for (const auto& site : config.model.options->ffn_sites()) {
    if (!config.ffn.replaces(site.index)) continue;
    total += config.ffn.options->extra_step_bytes(
        site, static_cast<double>(batch_size) * site.tokens_per_sample, gemm_bytes);
  }
  return total;
}

void run_bench(const BenchArgs& args, std::ostream& out, std::ostream& err) {
  if (args.warmup_steps < 0 || args.timed_steps < 1) {
    throw InputError("bench: --warmup must be >= 0 and --steps >= 1");
  }
  auto config = default_run_config();
  config.model = ModelConfig::of("vit", vit_preset("base"));
  config = build_run_config(config, {args.config_file, args.assignments});
  BenchmarkOptions options;
  options.warmup_steps = args.warmup_steps;
  options.timed_steps = args.timed_steps;
  options.profile_trace = args.profile_trace;
  const auto result = benchmark_training_step(config, options);
  out << result.dump() << std::endl;
  err << result["fallbacks_message"].get<std::string>();
}

nlohmann::json benchmark_training_step(const RunConfig& config, const BenchmarkOptions& options) {
  if (config.train.cuda_graph && options.warmup_steps <= Trainer::kCudaGraphWarmupSteps) {
    throw InputError("bench: --warmup " + std::to_string(options.warmup_steps) +
                     " with train.cuda_graph: expected at least " +
                     std::to_string(Trainer::kCudaGraphWarmupSteps + 1) +
                     " (eager warm-up steps, then the capture), so that only replays are timed");
  }
  const auto device = resolve_device(config.train.device);
  // As run_training does: a bench at train.threads = N must be compared with a loop at N.
  if (config.train.threads > 0) torch::set_num_threads(static_cast<int>(config.train.threads));
  torch::manual_seed(static_cast<uint64_t>(config.train.seed));
  const auto& m = *config.model.options;
  auto model = build_model(config.model, config.ffn);
  const int64_t params = count_parameters(*model);
  // Experts per multi-expert FFN, as the model's FFNs say (0: dense).
  int64_t experts = 0;
  for_each_capable<HasExpertSets>(*model, [&](const std::string&, const HasExpertSets& ffn) {
    experts = std::max(experts, ffn.expert_sets().num_experts);
  });
  const std::shared_ptr<const Task> task = make_task(config);
  Trainer trainer(config.train, model, task, device);
  trainer.set_lr(config.train.lr);
  // The task's form of input: images for an image task, token ids for a text task.
  const auto batch = task->synthetic_batch(m, config.train.batch_size);
  // The batch lives on the device already, as a prefetched batch would.
  const auto on_device = batch.to(device);

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
  const double tflops = 3.0 * m.forward_flops_per_sample(config.ffn) * images_per_s / 1e12;
  const double peak = device_bf16_peak_tflops(device_name);
  // The custom CUDA kernels run only where they were built and the step is on CUDA.
  const bool custom_kernels = device.is_cuda() && expert_kernels_compiled();
  const auto ffn_json = config.ffn.to_json();
  nlohmann::json result = {
      {"model", config.model.to_json()},
      // The table script's row keys: the ExFusion variant or else the kind, and N.
      {"ffn", ffn_json.value("variant", config.ffn.kind)},
      {"experts", experts},
      {"ffn_config", ffn_json},
      {"run", config.ffn.run_name()},
      {"batch", config.train.batch_size},
      {"device", device_name},
      {"precision", trainer.bf16() ? "bf16" : "fp32"},
      {"threads", torch::get_num_threads()},
      {"expert_kernels", custom_kernels && config.train.expert_kernels},
      {"layer_norm_kernels", custom_kernels && config.train.layer_norm_kernels},
      {"bias_grad_epilogue", custom_kernels && config.train.bias_grad_epilogue},
      {"attention_kernels", device.is_cpu() && config.train.attention_kernels},
      {"rms_norm_kernels", device.is_cpu() && config.train.rms_norm_kernels},
      {"gated_activation_kernels", device.is_cpu() && config.train.gated_activation_kernels},
      {"cross_entropy_kernels", device.is_cpu() && config.train.cross_entropy_kernels},
      {"activation_kernels", device.is_cpu() && config.train.activation_kernels},
      {"depthwise_conv_kernels", device.is_cpu() && config.train.depthwise_conv_kernels},
      {"cuda_graph", trainer.cuda_graph_captured()},
      {"params", params},
      {"warmup_steps", options.warmup_steps},
      {"timed_steps", options.timed_steps},
      // img_per_s is the samples' rate whatever they are (the GPU table's key since the ViT).
      {"img_per_s", images_per_s},
      {"samples_per_s", images_per_s},
      {"ms_per_step", 1000.0 * seconds / static_cast<double>(options.timed_steps)},
      {"tflops", tflops},
      {"mfu", peak > 0 ? nlohmann::json(tflops / peak) : nlohmann::json(nullptr)},
      {"peak_mem_mib", nullptr}};
  if (ffn_json.contains("top_k")) result["top_k"] = ffn_json["top_k"];
  if (const double tokens = task->tokens_per_sample(m); tokens > 0) {
    result["tokens_per_s"] = images_per_s * tokens;
  }
  result["fast_path_calls"] = trainer.fast_path_calls().to_json();
  result["fallbacks_message"] = trainer.fast_path_calls().fallbacks_message();
  // ExFusion's memory-traffic floor beside the measured step (see step_benchmark.h).
  const double extra_bytes =
      extra_bytes_per_step(config, config.train.batch_size, trainer.bf16() ? 2 : 4);
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
