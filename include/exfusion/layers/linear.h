// The linear layers' forward pass, and where their backward computes the bias gradient.
// LibTorch's LinearImpl::forward runs matmul and then adds the bias as a separate float32 op
// under bf16 autocast; at::linear flattens to one addmm with the bias fused into the cuBLASLt
// GEMM (measured on an H100: those bias adds were 15 % of a ViT-B/16 training step). Its
// backward then sums the output gradient over rows in a kernel of its own (2.8 ms of that
// step); on CUDA, linear() instead asks cuBLASLt for that sum in the weight-gradient GEMM's
// epilogue (BGRADB) and writes the weight gradient in the weight's own dtype, where the current
// FastPathScope's policy allows it (bias_grad_epilogue, util/fast_paths.h).
#pragma once
#include <ATen/ATen.h>
#include <torch/nn/modules/linear.h>

#include <tuple>

namespace exfusion {

// y = x Wᵀ + b over x's last dimension (b may be undefined). Under autocast, x, W and b are
// cast to the autocast dtype first, as at::linear's autocast rule does.
torch::Tensor linear(const torch::Tensor& x, const torch::Tensor& weight,
                     const torch::Tensor& bias);

inline torch::Tensor linear(const torch::Tensor& x, const torch::nn::Linear& layer) {
  return linear(x, layer->weight, layer->bias);
}

// The same as linear(), always through the autograd node that linear() uses on CUDA, on any
// device: on CUDA its weight and bias gradients come from one cuBLASLt GEMM, elsewhere from
// reference::linear_weight_bias_grad. linear() is the call to use; this one is for the tests.
torch::Tensor linear_with_bias_grad_epilogue(const torch::Tensor& x, const torch::Tensor& weight,
                                             const torch::Tensor& bias);

namespace reference {
// (dW = dyᵀ x as `weight_dtype`, db = Σ_rows dy as `bias_dtype`) for dy [rows, out] and
// x [rows, in], accumulated in float32 (float64 for float64 inputs).
std::tuple<torch::Tensor, torch::Tensor> linear_weight_bias_grad(const torch::Tensor& dy,
                                                                 const torch::Tensor& x,
                                                                 torch::ScalarType weight_dtype,
                                                                 torch::ScalarType bias_dtype);
}  // namespace reference

}  // namespace exfusion
