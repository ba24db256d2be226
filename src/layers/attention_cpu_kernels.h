// Entry points of the CPU attention kernels (attention_cpu_kernels.cpp): multi-head attention on
// the float rows the q, k and v linears write (no permutes, no unbind and none of their backward's
// copies), with an optional additive term on the scores (T5's position bias, Swin's bias and
// window mask) and its gradient, and an optional causal mask. attention.cpp checks the tensors
// and calls these; at::scaled_dot_product_attention is the reference they are tested against.
#pragma once
#include <cstdint>

namespace exfusion::cpu {

// The sizes they take: up to 256 queries and keys, heads up to 128 wide, and a pair's q, k or v
// block (tokens × head width) up to 128 · 64 floats, so that a task's blocks of 16 pairs stay
// within reach of the L2 cache (each block is read once per query) and each query's loop over the
// keys short.
constexpr int64_t kAttentionMaxTokens = 256;
constexpr int64_t kAttentionMaxHeadDim = 128;
constexpr int64_t kAttentionMaxBlock = 128 * 64;

// One call's sizes. Pairs are (batch b, head h), numbered b · heads + h.
struct AttentionShape {
  int64_t batch = 0, heads = 0, queries = 0, keys = 0, head_dim = 0;
  float scale = 1.f;  // on q·k
  // Query i sees the keys j ≤ i + keys − queries (the last query sees every key); keys ≥ queries.
  bool causal = false;
  // 0: no additive term; otherwise the term is [additive_batches, heads, queries, keys] and pair
  // (b, h) adds its slice (b mod additive_batches, h) to its scores (additive_batches divides
  // batch: 1 for a bias shared by the batch, the window count for Swin's masks).
  int64_t additive_batches = 0;
};

// Whether the kernels take calls of this shape.
bool attention_kernels_cover(const AttentionShape& shape);

// Pair (b, h)'s query i is the head_dim floats at q + (b · queries + i) · q_row_stride +
// h · head_dim; keys and values likewise with keys and kv_row_stride (q, k and v may be column
// ranges of one packed row).
struct AttentionOperands {
  const float *q = nullptr, *k = nullptr, *v = nullptr;
  int64_t q_row_stride = 0, kv_row_stride = 0;
  const float* additive = nullptr;  // contiguous, as AttentionShape::additive_batches says
};

// The gradients, laid out as the operands; every element of q's, k's and v's head columns is
// written (other columns of their rows are left alone), and the additive term's gradient is
// overwritten where wanted (nullptr: not wanted).
struct AttentionGradients {
  float *q = nullptr, *k = nullptr, *v = nullptr;
  float* additive = nullptr;
};

// out = softmax(scale · q kᵀ + additive, masked) v per pair, as [batch, queries, heads · head_dim]
// rows (the heads side by side, as the output linear reads them), and each score row's log Σ exp
// as [batch · heads, queries], which the backward uses to recompute the probabilities.
void attention_forward(const AttentionShape& shape, const AttentionOperands& operands, float* out,
                       float* log_sum_exp);

// The gradients from grad_out (laid out as out), with out and log_sum_exp of the forward; the
// same bits at any thread count.
void attention_backward(const AttentionShape& shape, const AttentionOperands& operands,
                        const float* out, const float* log_sum_exp, const float* grad_out,
                        const AttentionGradients& gradients);

}  // namespace exfusion::cpu
