// Counts, for each CUDA fast path, the calls that took it and the calls that fell back to the
// ATen route although the path was switched on and the tensors were on CUDA. A fallback is
// silent on purpose (a shape a kernel does not cover still trains), so `exfusion bench` reports
// these counts: they say whether its numbers come from the paths its switches claim.
#pragma once
#include <array>
#include <cstdint>
#include <string>

namespace exfusion {

enum class FastPath { kExpertKernels, kLayerNormKernels, kBiasGradEpilogue };
inline constexpr std::array<FastPath, 3> kFastPaths = {
    FastPath::kExpertKernels, FastPath::kLayerNormKernels, FastPath::kBiasGradEpilogue};

// The name of the path's switch under `train.` (expert_kernels, ...).
std::string to_string(FastPath path);

struct FastPathCalls {
  int64_t taken = 0;
  int64_t fell_back = 0;
};

// Process-wide and thread-safe. Counted on the host when a call decides, so the steps a CUDA
// graph replays are not counted again: a graphed run counts its eager steps and its capture.
void count_fast_path_call(FastPath path, bool taken);
FastPathCalls fast_path_calls(FastPath path);
void reset_fast_path_calls();

}  // namespace exfusion
