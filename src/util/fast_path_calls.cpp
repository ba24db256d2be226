// The process-wide fast-path call counters (see fast_path_calls.h).
#include "exfusion/util/fast_path_calls.h"

#include <atomic>
#include <cstddef>

namespace exfusion {
namespace {

struct Counters {
  std::atomic<int64_t> taken{0};
  std::atomic<int64_t> fell_back{0};
};

std::array<Counters, kFastPaths.size()> counters;

Counters& counters_of(FastPath path) { return counters.at(static_cast<size_t>(path)); }

}  // namespace

std::string to_string(FastPath path) {
  switch (path) {
    case FastPath::kExpertKernels:
      return "expert_kernels";
    case FastPath::kLayerNormKernels:
      return "layer_norm_kernels";
    case FastPath::kBiasGradEpilogue:
      return "bias_grad_epilogue";
  }
  return "unknown";
}

void count_fast_path_call(FastPath path, bool taken) {
  auto& counter = counters_of(path);
  (taken ? counter.taken : counter.fell_back).fetch_add(1, std::memory_order_relaxed);
}

FastPathCalls fast_path_calls(FastPath path) {
  const auto& counter = counters_of(path);
  return {counter.taken.load(std::memory_order_relaxed),
          counter.fell_back.load(std::memory_order_relaxed)};
}

void reset_fast_path_calls() {
  for (auto& counter : counters) {
    counter.taken.store(0, std::memory_order_relaxed);
    counter.fell_back.store(0, std::memory_order_relaxed);
  }
}

std::string fast_path_fallbacks_message() {
  std::string message;
  for (const auto path : kFastPaths) {
    const auto calls = fast_path_calls(path);
    if (calls.fell_back == 0) continue;
    message += std::to_string(calls.fell_back) + " of " +
               std::to_string(calls.fell_back + calls.taken) + " " + to_string(path) +
               " calls fell back to the ATen route (same math, slower; train." + to_string(path) +
               ")\n";
  }
  return message;
}

nlohmann::json fast_path_calls_json() {
  auto json = nlohmann::json::object();
  for (const auto path : kFastPaths) {
    const auto calls = fast_path_calls(path);
    json[to_string(path)] = {{"taken", calls.taken}, {"fell_back", calls.fell_back}};
  }
  return json;
}

}  // namespace exfusion
