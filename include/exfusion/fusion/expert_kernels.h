// The three memory-bound primitives of an expert bank: the weighted sum of its N experts,
// the fusion-weight gradient <E_i, dW̄>, and AdamW on all N experts from the one fused
// gradient. On CUDA tensors they run custom kernels (expert_kernels.cu); `reference::` holds
// the plain ATen versions the kernels are tested against, used on the CPU and when the current
// FastPathScope's policy switches the kernels off.
#pragma once
#include <torch/types.h>

namespace exfusion {

// AdamW's hyperparameters, shared with the optimizer (train/optimizer.h), which applies
// each parameter group's own weight decay.
struct AdamWOptions {
  double lr = 1e-3;
  double beta1 = 0.9, beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.05;
};

// Whether this build has the CUDA kernels. Whether they are used is the current
// FastPathScope's policy (expert_kernels, util/fast_paths.h).
bool expert_kernels_compiled();

// Σ_i coeffs[i] · experts[i] for experts [N, ...] float32 and coeffs [N]; shape experts[1:],
// accumulated in float32 and returned as `out_dtype`. Not differentiable (see ExpertMix).
torch::Tensor mix_experts(const torch::Tensor& experts, const torch::Tensor& coeffs,
                          torch::ScalarType out_dtype);

// d coeffs[i] = <experts[i], grad> in float32, shape [N]; grad has shape experts[1:].
torch::Tensor mix_coefficient_grad(const torch::Tensor& experts, const torch::Tensor& grad);

// One AdamW step (PyTorch's formulation: decoupled weight decay, bias correction from the
// float32 `step`, which the caller has already incremented) on every expert, expert i's
// gradient being coeffs[i] · grad_scale · grad. grad_scale is a float32 scalar on the device
// (the clipping coefficient) or undefined (1). `lr`, when defined, is a float32 scalar on the
// parameters' device read in place of hyper.lr, so that a captured CUDA graph follows the
// schedule. Updates params, exp_avg, exp_avg_sq in place.
void factored_adamw_(const torch::Tensor& params, const torch::Tensor& exp_avg,
                     const torch::Tensor& exp_avg_sq, const torch::Tensor& grad,
                     const torch::Tensor& coeffs, const torch::Tensor& step,
                     const torch::Tensor& grad_scale, const AdamWOptions& hyper,
                     const torch::Tensor& lr = {});

namespace reference {
torch::Tensor mix_experts(const torch::Tensor& experts, const torch::Tensor& coeffs,
                          torch::ScalarType out_dtype);
torch::Tensor mix_coefficient_grad(const torch::Tensor& experts, const torch::Tensor& grad);
// Materialises the N gradients and runs at::_fused_adamw_ on them.
void factored_adamw_(const torch::Tensor& params, const torch::Tensor& exp_avg,
                     const torch::Tensor& exp_avg_sq, const torch::Tensor& grad,
                     const torch::Tensor& coeffs, const torch::Tensor& step,
                     const torch::Tensor& grad_scale, const AdamWOptions& hyper,
                     const torch::Tensor& lr = {});
}  // namespace reference

}  // namespace exfusion
