// Multi-head self-attention with timm's layout (one `qkv` linear, one `proj`). On CUDA it is
// at::scaled_dot_product_attention (its fused flash/memory-efficient kernels); on the CPU, short
// sequences go through kernels of our own on the packed qkv rows (train.attention_kernels).
#pragma once
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>
#include "exfusion/layers/linear.h"

namespace exfusion {

class AttentionImpl : public torch::nn::Module {
 public:
  AttentionImpl(int64_t dim, int64_t num_heads);
  torch::Tensor forward(const torch::Tensor& x);  // [B, L, D] -> [B, L, D]

  int64_t num_heads;
  Linear qkv{nullptr}, proj{nullptr};
};
TORCH_MODULE(Attention);

}  // namespace exfusion
