// N stacked linear experts (SPEC §1: experts are single linear layers) and their weighted
// sum. Stored as one weight [N, out, in] and one bias [N, out] so the fused linear layer is
// a single GEMV over the expert axis and the checkpoint names match the dense layer's.
#pragma once
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <memory>
#include <string>

#include "exfusion/config/fields.h"
#include "exfusion/fusion/expert_mix.h"
#include "exfusion/layers/capabilities.h"
#include "exfusion/layers/ffn_site.h"

namespace exfusion {

// How the N experts start: each with its own draw of the layer's init, all equal to one
// draw, or all equal to one draw plus independent Gaussian noise of std `noise_std`.
enum class ExpertInit { kIndependent, kCopy, kCopyNoise };

// independent, copy, copy+noise: the config's names.
const config::Choices<ExpertInit>& expert_init_names();
std::string to_string(ExpertInit init);

struct ExpertBankOptions {
  ExpertBankOptions(int64_t num_experts, int64_t in_features, int64_t out_features)
      : num_experts_(num_experts), in_features_(in_features), out_features_(out_features) {}
  TORCH_ARG(int64_t, num_experts);
  TORCH_ARG(int64_t, in_features);
  TORCH_ARG(int64_t, out_features);
  TORCH_ARG(ExpertInit, init) = ExpertInit::kIndependent;
  TORCH_ARG(double, init_std) = 0.02;
  TORCH_ARG(bool, truncated) = true;  // the draw truncated at ±2σ (timm) or not (T5, Llama)
  TORCH_ARG(double, noise_std) = 1e-3;
  TORCH_ARG(bool, bias) = true;  // false: no bias (T5's and Llama's FFNs)
};

class ExpertBankImpl : public torch::nn::Module,
                       public TakesFactoredGradient,
                       public ExemptFromWeightDecay {
 public:
  explicit ExpertBankImpl(ExpertBankOptions options);
  void reset_parameters();

  // W̄ = Σ_i m_i W_i and b̄ = Σ_i m_i b_i, differentiable in both the experts and `m`
  // (ExpertMix); b̄ undefined without biases. Under autocast the sums are written directly in the
  // GEMM's lower-precision type, accumulated in float32.
  std::pair<torch::Tensor, torch::Tensor> fuse(const torch::Tensor& m) const;

  // Biases, stacked per expert as [N, out]: biases all the same.
  std::vector<std::string> exempt_from_weight_decay() const override {
    return bias.defined() ? std::vector<std::string>{"bias"} : std::vector<std::string>{};
  }
  std::string factored_parameter() const override { return "weight"; }
  std::shared_ptr<FactoredGradient> factored_gradient_sink() const override {
    return weight_grad_sink;
  }
  void set_factored_gradient_sink(std::shared_ptr<FactoredGradient> sink) override {
    weight_grad_sink = std::move(sink);
  }

  ExpertBankOptions options;
  torch::Tensor weight;  // [N, out, in]
  torch::Tensor bias;    // [N, out], undefined without options.bias()
  // Set by an optimizer that steps `weight` from its factored gradient (FusedAdamW); null
  // means ordinary autograd gradients.
  std::shared_ptr<FactoredGradient> weight_grad_sink;
};
TORCH_MODULE(ExpertBank);

// The expert sets of an FFN of `form` whose experts are registered under the form's layer names.
ExpertSets form_expert_sets(const FfnForm& form, int64_t num_experts,
                            std::shared_ptr<torch::nn::Module> router = nullptr);

}  // namespace exfusion
