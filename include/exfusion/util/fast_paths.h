// Which fast paths (CUDA kernels, and the CPU attention kernel) a piece of work may take, and how
// many of its calls took each one or fell back to the ATen route: a policy and counters that a
// FastPathScope makes current for one thread (training and evaluation open one from the run's
// config), instead of global switches. A fallback is silent on purpose (a shape a kernel does not
// cover still trains), so `exfusion bench` and `exfusion train` report the counts: they say whether
// the numbers come from the paths the switches claim.
#pragma once
#include <nlohmann/json.hpp>

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

namespace exfusion {

// What one call is: kExpertKernels, one expert-bank primitive (mix, coefficient gradient or
// factored AdamW step); kLayerNormKernels, one LayerNorm forward (with its backward);
// kBiasGradEpilogue, one trained linear layer with a bias (counted in its backward, where
// cuBLASLt may still decline, or in its forward when its dtypes are not covered);
// kAttentionKernels, one self-attention on the CPU (a sequence the kernel does not cover falls
// back to scaled_dot_product_attention); kRmsNormKernels, one RMS norm on the CPU (with its
// backward; other dtypes fall back to the ATen composite); kGatedActivationKernels, one gated
// FFN's act(gate) ⊙ up on the CPU (likewise); kCrossEntropyKernels, one token cross-entropy of
// a language model's logits on the CPU (likewise); kActivationKernels, one plain FFN's act(x) on
// the CPU (likewise); kDepthwiseConvKernels, one FFN depthwise grid convolution (PVT v2) on the
// CPU (likewise).
enum class FastPath {
  kExpertKernels,
  kLayerNormKernels,
  kBiasGradEpilogue,
  kAttentionKernels,
  kRmsNormKernels,
  kGatedActivationKernels,
  kCrossEntropyKernels,
  kActivationKernels,
  kDepthwiseConvKernels
};
inline constexpr std::array<FastPath, 9> kFastPaths = {
    FastPath::kExpertKernels,       FastPath::kLayerNormKernels,  FastPath::kBiasGradEpilogue,
    FastPath::kAttentionKernels,    FastPath::kRmsNormKernels,    FastPath::kGatedActivationKernels,
    FastPath::kCrossEntropyKernels, FastPath::kActivationKernels, FastPath::kDepthwiseConvKernels};

// The name of the path's switch under `train.` (expert_kernels, ...).
std::string to_string(FastPath path);

// Which paths may be taken where they apply; each is on by default, as train.* is.
struct FastPathPolicy {
  bool expert_kernels = true;
  bool layer_norm_kernels = true;
  bool bias_grad_epilogue = true;
  bool attention_kernels = true;
  bool rms_norm_kernels = true;
  bool gated_activation_kernels = true;
  bool cross_entropy_kernels = true;
  bool activation_kernels = true;
  bool depthwise_conv_kernels = true;

  bool allows(FastPath path) const;
};

struct FastPathCalls {
  int64_t taken = 0;
  int64_t fell_back = 0;
};

// Calls per path, thread-safe (a backward pass counts on autograd's device threads). Counted
// on the host when a call decides, so the steps a CUDA graph replays are not counted again: a
// graphed run counts its eager steps and its capture. A switched-off path counts nothing.
class FastPathCounters {
 public:
  void count(FastPath path, bool taken);
  FastPathCalls calls(FastPath path) const;
  // Sets a path's counts (a resumed run continues the counts its training state holds).
  void set(FastPath path, const FastPathCalls& calls);
  // {"<path>": {"taken": n, "fell_back": m}, ...} for every path, as bench and train report it.
  nlohmann::json to_json() const;
  // One line per path with fallbacks ("12 of 50 layer_norm_kernels calls fell back to ..."),
  // empty when none fell back: a fallback is slower, not wrong, so this is said, not thrown.
  std::string fallbacks_message() const;

 private:
  struct Counter {
    std::atomic<int64_t> taken{0};
    std::atomic<int64_t> fell_back{0};
  };
  std::array<Counter, kFastPaths.size()> counters_;
};

// What a scope makes current: the policy, and the counters calls go to (null: none).
struct FastPathContext {
  FastPathPolicy policy;
  std::shared_ptr<FastPathCounters> counters;
};

// Makes a policy and its counters current for this thread until destroyed, as
// c10::InferenceMode does for its mode: scopes nest, and each destructor restores the one that
// was current when it opened (so scopes close in the reverse order of opening, on their thread).
// Outside every scope the default policy holds (every path on) and nothing is counted.
// Autograd runs the backward of CUDA tensors on device threads of its own, which see none of
// this thread's scopes: a node that decides or counts in its backward keeps current() from its
// forward and opens a scope from it in its backward (ExpertMixBackward,
// LinearWithBiasGradEpilogue).
class FastPathScope {
 public:
  explicit FastPathScope(FastPathPolicy policy, std::shared_ptr<FastPathCounters> counters =
                                                    std::make_shared<FastPathCounters>());
  explicit FastPathScope(const FastPathContext& context);
  ~FastPathScope();
  FastPathScope(const FastPathScope&) = delete;
  FastPathScope& operator=(const FastPathScope&) = delete;
  FastPathScope(FastPathScope&&) = delete;
  FastPathScope& operator=(FastPathScope&&) = delete;

  const std::shared_ptr<FastPathCounters>& counters() const { return counters_; }

  // This thread's current policy and context.
  static FastPathPolicy policy();
  static FastPathContext current();

 private:
  std::shared_ptr<FastPathCounters> counters_;
  FastPathContext enclosing_;
};

// Counts one call into the current scope's counters; outside every scope, nowhere.
void count_fast_path_call(FastPath path, bool taken);

// FastPathCounters::fallbacks_message() for counts as to_json() writes them (the bench's
// `fast_path_calls`, whose counters live and die inside the benchmark).
std::string fast_path_fallbacks_message(const nlohmann::json& calls);

}  // namespace exfusion
