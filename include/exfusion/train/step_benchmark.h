// Training-step throughput on synthetic data: the trainer's own step (forward, backward,
// clipping, fused AdamW), timed after a warm-up with the device synchronised only at the
// two ends. Reports images/s, ms/step, peak device memory, achieved TFLOP/s and MFU.
#pragma once
#include <nlohmann/json.hpp>
#include <string>

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

// Dense bf16 tensor-core peak of the device in TFLOP/s, 0 when unknown (CPU, other GPUs).
double device_bf16_peak_tflops(const std::string& device_name);

nlohmann::json benchmark_training_step(const RunConfig& config, const BenchmarkOptions& options);

}  // namespace exfusion
