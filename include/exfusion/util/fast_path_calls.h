// Counts, for each CUDA fast path, the calls on CUDA tensors that took it and those that fell
// back to the ATen route; with a path switched off its calls count nothing. A fallback is
// silent on purpose (a shape a kernel does not cover still trains), so `exfusion bench` reports
// these counts: they say whether its numbers come from the paths its switches claim.
#pragma once
#include <nlohmann/json.hpp>

#include <array>
#include <cstdint>
#include <string>

namespace exfusion {

// What one call is: kExpertKernels, one expert-bank primitive (mix, coefficient gradient or
// factored AdamW step); kLayerNormKernels, one LayerNorm forward (with its backward);
// kBiasGradEpilogue, one trained linear layer with a bias (counted in its backward, where
// cuBLASLt may still decline, or in its forward when its dtypes are not covered).
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

// {"<path>": {"taken": n, "fell_back": m}, ...} for every path, as bench and train report it.
nlohmann::json fast_path_calls_json();

// One line per path with fallbacks ("12 of 50 layer_norm_kernels calls fell back to ..."),
// empty when none fell back: a fallback is slower, not wrong, so this is said, not thrown.
std::string fast_path_fallbacks_message();

}  // namespace exfusion
