// Multi-head attention: the one function every model's attention calls (multi_head_attention:
// on the CPU our kernels where they cover the call, otherwise scaled_dot_product_attention or
// its CPU composite), and the self-attention module with timm's layout (one `qkv` linear, one
// `proj`) that the ViT blocks use.
#pragma once
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include "exfusion/layers/linear.h"

namespace exfusion {

// Where one call's q, k and v lie: column ranges of [batch, tokens, width] rows, as the linears
// write them (one packed qkv linear's output; or a q linear's and a packed kv linear's), head h's
// columns from column + h · head_dim.
struct AttentionInputs {
  torch::Tensor query_rows;  // [B, Tq, Wq]
  int64_t query_column = 0;
  torch::Tensor key_value_rows;  // [B, Tk, Wkv]; may be query_rows itself
  int64_t key_column = 0, value_column = 0;
};

struct AttentionOptions {
  int64_t heads = 1, head_dim = 0;
  double scale = 1.0;  // on q·k
  // Query i sees the keys j ≤ i + Tk − Tq (Tk ≥ Tq; with Tk = Tq, the past and itself).
  bool causal = false;
  // Added to the scores (a position bias, a window mask): [P, heads, Tq, Tk] with P dividing B,
  // batch element b taking slice b mod P; its gradient flows where it requires one.
  torch::Tensor additive;
  double dropout = 0.0;  // on the probabilities, in training

  // `heads` of `head_dim`, the scores scaled by 1/√head_dim (scaled_dot_product_attention's
  // default; T5 alone scales its initialisation instead).
  static AttentionOptions standard(int64_t heads, int64_t head_dim);
};

// softmax(scale · q kᵀ + additive, masked) v per head, as [B, Tq, heads · head_dim] rows, the
// heads side by side as an output linear reads them. On the CPU (train.attention_kernels) calls
// the kernels cover go through them, counted as FastPath::kAttentionKernels, and the others fall
// back, counted; the fallback and every other device take scaled_dot_product_attention, or on
// the CPU with an additive term one baddbmm, softmax and bmm (sdpa's math path makes three more
// passes over the scores for a bias that needs a gradient).
torch::Tensor multi_head_attention(const AttentionInputs& inputs, const AttentionOptions& options,
                                   bool training);

class AttentionImpl : public torch::nn::Module {
 public:
  AttentionImpl(int64_t dim, int64_t num_heads);
  torch::Tensor forward(const torch::Tensor& x);  // [B, L, D] -> [B, L, D]

  int64_t num_heads;
  Linear qkv{nullptr}, proj{nullptr};
};
TORCH_MODULE(Attention);

}  // namespace exfusion
