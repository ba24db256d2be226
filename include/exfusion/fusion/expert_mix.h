// ExpertMix: W̄ = Σ_i m_i E_i of an expert bank as one autograd node over the kernels of
// expert_kernels.h. Its backward gives dm_i = <E_i, dW̄> and, instead of N expert gradients
// m_i dW̄, can hand dW̄ and m to a FactoredGradient that the optimizer steps from directly.
#pragma once
#include <torch/types.h>

#include <memory>

namespace exfusion {

// An expert bank's pending weight gradient in factored form: expert i's gradient is
// coeffs[i] · scale · grad. Filled by ExpertMix's backward, consumed (and cleared) by the
// optimizer; clipping sets `scale`.
struct FactoredGradient {
  torch::Tensor grad;    // dW̄, shaped like one expert; undefined when nothing is pending
  torch::Tensor coeffs;  // m [N], in the experts' dtype, of the forward pass that produced `grad`
  torch::Tensor scale;   // float32 scalar on the device, or undefined (1)

  bool pending() const { return grad.defined(); }
  void clear();
  // The N gradients as one [N, ...] tensor shaped like `experts`.
  torch::Tensor materialize(const torch::Tensor& experts) const;
};

// Σ_i coeffs[i] · experts[i] as `out_dtype` (shape experts[1:]), differentiable in both.
// With a sink, the first backward pass after the sink was cleared stores dW̄ there and gives
// the experts no gradient; a further pass before the optimizer step (gradient accumulation)
// gives them the ordinary materialised gradient, so nothing is ever lost.
torch::Tensor expert_mix(const torch::Tensor& experts, const torch::Tensor& coeffs,
                         torch::ScalarType out_dtype,
                         const std::shared_ptr<FactoredGradient>& sink = nullptr);

}  // namespace exfusion
