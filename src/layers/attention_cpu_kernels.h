// Entry points of the CPU attention kernels for short sequences (attention_cpu_kernels.cpp):
// plain pointers on the packed layout the qkv linear writes, so neither the heads' permutes nor
// the unbind and its backward's copies are needed; attention.cpp checks the tensors and calls
// these, and at::scaled_dot_product_attention is the reference they are tested against.
#pragma once
#include <cstdint>

namespace exfusion::cpu {

// Sequences up to this many tokens, heads up to this wide: a task's blocks (16 pairs' q, k, v,
// o, dO and their gradients) stay within a few MB, and each query's loop over the keys short.
constexpr int64_t kShortAttentionMaxTokens = 64;
constexpr int64_t kShortAttentionMaxHeadDim = 128;

// The shape of one call: qkv is [batch, tokens, 3, heads, head_dim] contiguous (the qkv
// linear's output viewed so), out and grad_out are [batch, tokens, heads, head_dim] contiguous,
// log_sum_exp is [batch, heads, tokens].
struct ShortAttentionShape {
  int64_t batch = 0, tokens = 0, heads = 0, head_dim = 0;
  float scale = 1.f;  // on q·k (1/√head_dim, as scaled_dot_product_attention)
};

// out = softmax(scale · q kᵀ) v per (batch, head), and each row's log Σ exp of the scaled
// scores, which the backward uses to recompute the probabilities.
void short_attention_forward(const ShortAttentionShape& shape, const float* qkv, float* out,
                             float* log_sum_exp);

// grad_qkv (same layout as qkv, every element written) from grad_out, with qkv, out and
// log_sum_exp of the forward.
void short_attention_backward(const ShortAttentionShape& shape, const float* qkv, const float* out,
                              const float* log_sum_exp, const float* grad_out, float* grad_qkv);

}  // namespace exfusion::cpu
