// Training-step throughput on synthetic data: the trainer's own step (forward, backward,
// clipping, fused AdamW), timed after a warm-up with the device synchronised only at the
// two ends. Reports images/s, ms/step, peak device memory, achieved TFLOP/s and MFU, and for
// each CUDA fast path the calls that took it or fell back over the whole run
// (the trainer's FastPathCounters, util/fast_paths.h).
#pragma once
#include <nlohmann/json.hpp>
#include <ostream>
#include <string>
#include <vector>

#include "exfusion/train/run_config.h"

namespace exfusion {

struct BenchmarkOptions {
  int64_t warmup_steps = 5;
  int64_t timed_steps = 20;
  // When set, a few more steps run under the Kineto profiler after the timed ones and their
  // CPU and GPU events are written there as a Chrome trace (bench/trace_summary.py reads it).
  std::string profile_trace;
  int64_t profiled_steps = 3;
};

// `exfusion bench`'s arguments: the config's layers and the step counts.
struct BenchArgs {
  std::string config_file;               // YAML or JSON overlay; the model defaults to ViT-B/16
  std::vector<std::string> assignments;  // key.path=value overrides, applied last
  int64_t warmup_steps = 5;
  int64_t timed_steps = 20;
  std::string profile_trace;  // Chrome trace of a few extra steps, when set
};
// The bench's config (ViT-B/16 at 224 px, 1000 classes, with the main job's FFN and training
// settings, then the args' layers), timed; prints one JSON line on `out`, fallbacks on `err`.
void run_bench(const BenchArgs& args, std::ostream& out, std::ostream& err);

// Dense bf16 tensor-core peak of the device in TFLOP/s, 0 when unknown (CPU, other GPUs).
double device_bf16_peak_tflops(const std::string& device_name);
// Peak memory bandwidth of the device in TB/s from its datasheet, 0 when unknown.
double device_memory_tbps(const std::string& device_name);

// Bytes of memory traffic one training step needs beyond the dense step's, at the floor an
// implementation can reach, summed over the blocks whose FFN kind adds traffic. For ExFusion,
// per expert bank of P = out·(in+1) values, N float32 experts and a fused weight of
// `gemm_bytes` per value (2 for bf16) —
//   forward  N·4·P read, g·P written          (dense: cast 4·P read, g·P written)
//   backward N·4·P read for <E_i, dW̄>, g·P read
//   AdamW    24·N·P (param, exp_avg, exp_avg_sq read and written) + g·P for dW̄
//            (dense: g·P read and 4·P written to cast dW, then 28·P)
// i.e. (32·N − 36 + g)·P, plus for each memory-bank router its input read twice (logits,
// weight gradient): 2·tokens·D·g per image batch. 0 for a dense model.
double extra_bytes_per_step(const RunConfig& config, int64_t batch_size, int64_t gemm_bytes);

nlohmann::json benchmark_training_step(const RunConfig& config, const BenchmarkOptions& options);

}  // namespace exfusion
