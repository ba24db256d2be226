// Fast-path policy, counters and the thread-local scope that makes them current (see
// fast_paths.h).
#include "exfusion/util/fast_paths.h"

#include <cstddef>
#include <utility>

namespace exfusion {
namespace {

// This thread's innermost open scope's context; the default policy and no counters outside
// every scope.
thread_local FastPathContext current_context;

}  // namespace

std::string to_string(FastPath path) {
  switch (path) {
    case FastPath::kExpertKernels:
      return "expert_kernels";
    case FastPath::kLayerNormKernels:
      return "layer_norm_kernels";
    case FastPath::kBiasGradEpilogue:
      return "bias_grad_epilogue";
    case FastPath::kAttentionKernels:
      return "attention_kernels";
    case FastPath::kRmsNormKernels:
      return "rms_norm_kernels";
    case FastPath::kGatedActivationKernels:
      return "gated_activation_kernels";
    case FastPath::kCrossEntropyKernels:
      return "cross_entropy_kernels";
    case FastPath::kActivationKernels:
      return "activation_kernels";
    case FastPath::kDepthwiseConvKernels:
      return "depthwise_conv_kernels";
  }
  return "unknown";
}

bool FastPathPolicy::allows(FastPath path) const {
  switch (path) {
    case FastPath::kExpertKernels:
      return expert_kernels;
    case FastPath::kLayerNormKernels:
      return layer_norm_kernels;
    case FastPath::kBiasGradEpilogue:
      return bias_grad_epilogue;
    case FastPath::kAttentionKernels:
      return attention_kernels;
    case FastPath::kRmsNormKernels:
      return rms_norm_kernels;
    case FastPath::kGatedActivationKernels:
      return gated_activation_kernels;
    case FastPath::kCrossEntropyKernels:
      return cross_entropy_kernels;
    case FastPath::kActivationKernels:
      return activation_kernels;
    case FastPath::kDepthwiseConvKernels:
      return depthwise_conv_kernels;
  }
  return false;
}

void FastPathCounters::count(FastPath path, bool taken) {
  auto& counter = counters_.at(static_cast<size_t>(path));
  (taken ? counter.taken : counter.fell_back).fetch_add(1, std::memory_order_relaxed);
}

void FastPathCounters::set(FastPath path, const FastPathCalls& calls) {
  auto& counter = counters_.at(static_cast<size_t>(path));
  counter.taken.store(calls.taken, std::memory_order_relaxed);
  counter.fell_back.store(calls.fell_back, std::memory_order_relaxed);
}

FastPathCalls FastPathCounters::calls(FastPath path) const {
  const auto& counter = counters_.at(static_cast<size_t>(path));
  return {counter.taken.load(std::memory_order_relaxed),
          counter.fell_back.load(std::memory_order_relaxed)};
}

nlohmann::json FastPathCounters::to_json() const {
  auto json = nlohmann::json::object();
  for (const auto path : kFastPaths) {
    const auto path_calls = calls(path);
    json[to_string(path)] = {{"taken", path_calls.taken}, {"fell_back", path_calls.fell_back}};
  }
  return json;
}

std::string FastPathCounters::fallbacks_message() const {
  return fast_path_fallbacks_message(to_json());
}

FastPathScope::FastPathScope(FastPathPolicy policy, std::shared_ptr<FastPathCounters> counters)
    : FastPathScope(FastPathContext{policy, std::move(counters)}) {}

FastPathScope::FastPathScope(const FastPathContext& context)
    : counters_(context.counters), enclosing_(std::exchange(current_context, context)) {}

FastPathScope::~FastPathScope() { current_context = std::move(enclosing_); }

FastPathPolicy FastPathScope::policy() { return current_context.policy; }

FastPathContext FastPathScope::current() { return current_context; }

void count_fast_path_call(FastPath path, bool taken) {
  if (current_context.counters) current_context.counters->count(path, taken);
}

std::string fast_path_fallbacks_message(const nlohmann::json& calls) {
  std::string message;
  for (const auto path : kFastPaths) {
    const auto& path_calls = calls.at(to_string(path));
    const auto fell_back = path_calls.at("fell_back").get<int64_t>();
    if (fell_back == 0) continue;
    const auto taken = path_calls.at("taken").get<int64_t>();
    message += std::to_string(fell_back) + " of " + std::to_string(fell_back + taken) + " " +
               to_string(path) + " calls fell back to the ATen route (same math, slower; train." +
               to_string(path) + ")\n";
  }
  return message;
}

}  // namespace exfusion
