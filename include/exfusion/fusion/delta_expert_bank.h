// DeRS experts (SPEC §2, "DeRS upcycling"): N linear experts that share one trainable base
// weight W_b and each add a lightweight trainable delta, W_i = W_b + Δ_i, so that N experts cost
// about one dense layer. Δ_i is sparse (fixed random positions, values from zero) or low-rank
// (A_i·B_i, B_i from zero); every expert therefore starts as the base.
#pragma once
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <utility>

#include "exfusion/config/fields.h"
#include "exfusion/layers/capabilities.h"

namespace exfusion {

enum class DeltaForm { kSparse, kLowRank };
const config::Choices<DeltaForm>& delta_form_names();  // "sparse", "low-rank"

struct DeltaExpertBankOptions {
  DeltaExpertBankOptions(int64_t num_experts, int64_t in_features, int64_t out_features)
      : num_experts_(num_experts), in_features_(in_features), out_features_(out_features) {}
  TORCH_ARG(int64_t, num_experts);
  TORCH_ARG(int64_t, in_features);
  TORCH_ARG(int64_t, out_features);
  TORCH_ARG(DeltaForm, form) = DeltaForm::kSparse;
  // Sparse: the share 1 − p of each expert's weight positions that its delta may change.
  TORCH_ARG(double, keep_ratio) = 0.1;
  // Low-rank: r of Δ = A·B.
  TORCH_ARG(int64_t, rank) = 4;
  TORCH_ARG(double, init_std) = 0.02;  // the base's init when not upcycled (the model's)
  TORCH_ARG(bool, truncated) = true;   // that draw truncated at ±2σ (timm) or not (T5, Llama)
  TORCH_ARG(bool, bias) = true;        // false: no biases (undefined `bias`)
};

// Tensors (their names are the checkpoint's): `base` [out, in], `bias` [N, out] (one bias per
// expert: out values each, negligible beside the weights); sparse: `delta_values` [N, K] and
// the buffer `delta_positions` [N, K] (flat indices into [out, in], distinct within an expert,
// drawn at construction from the global generator); low-rank: `delta_a` [N, out, r] from
// normal(0, 1/√r), so that a step of B moves Δ by about the step size, and `delta_b` [N, r, in]
// zero.
class DeltaExpertBankImpl : public torch::nn::Module, public ExemptFromWeightDecay {
 public:
  explicit DeltaExpertBankImpl(DeltaExpertBankOptions options);
  std::vector<std::string> exempt_from_weight_decay() const override {
    return bias.defined() ? std::vector<std::string>{"bias"} : std::vector<std::string>{};
  }

  // K, the positions each sparse delta holds: round(keep_ratio · out · in), at least 1.
  int64_t delta_size() const;
  // Every expert's weight W_b + Δ_i, [N, out, in], and the biases [N, out]; differentiable.
  std::pair<torch::Tensor, torch::Tensor> expert_weights() const;
  // W̄ = Σ_i m_i (W_b + Δ_i) = (Σ_i m_i)·W_b + Σ_i m_i Δ_i and b̄ = Σ_i m_i b_i, without
  // forming the N expert weights: a scatter of the weighted sparse values, or one GEMM
  // [out, N·r]·[N·r, in] for the low-rank deltas. Differentiable in every tensor and in `m`.
  std::pair<torch::Tensor, torch::Tensor> fuse(const torch::Tensor& m) const;

  DeltaExpertBankOptions options;
  torch::Tensor base, bias;
  torch::Tensor delta_values, delta_positions;  // sparse
  torch::Tensor delta_a, delta_b;               // low-rank
};
TORCH_MODULE(DeltaExpertBank);

}  // namespace exfusion
