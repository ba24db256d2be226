// Multi-head self-attention (see attention.h): on the CPU, sequences up to 64 tokens go through
// the kernels of attention_cpu_kernels.cpp (one autograd node from the packed qkv rows to the
// heads' outputs); anything else through at::scaled_dot_product_attention, their reference.
#include "exfusion/layers/attention.h"

#include <torch/autograd.h>

#include <cmath>

#include "attention_cpu_kernels.h"
#include "exfusion/layers/linear.h"
#include "exfusion/util/error.h"
#include "exfusion/util/fast_paths.h"
#include "exfusion/util/init.h"

namespace exfusion {
namespace {

cpu::ShortAttentionShape shape_of(const torch::Tensor& qkv, int64_t heads) {
  cpu::ShortAttentionShape shape;
  shape.batch = qkv.size(0);
  shape.tokens = qkv.size(1);
  shape.heads = heads;
  shape.head_dim = qkv.size(2) / (3 * heads);
  shape.scale = 1.f / std::sqrt(static_cast<float>(shape.head_dim));
  return shape;
}

// [B, L, 3·D] packed q, k, v (the qkv linear's output) -> [B, L, D], the heads side by side as
// the proj linear reads them.
struct ShortSequenceAttention : public torch::autograd::Function<ShortSequenceAttention> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& qkv,
                               int64_t heads) {
    const auto input = qkv.contiguous();
    const auto shape = shape_of(input, heads);
    auto out =
        torch::empty({shape.batch, shape.tokens, shape.heads * shape.head_dim}, input.options());
    auto log_sum_exp = torch::empty({shape.batch, shape.heads, shape.tokens}, input.options());
    cpu::short_attention_forward(shape, input.data_ptr<float>(), out.data_ptr<float>(),
                                 log_sum_exp.data_ptr<float>());
    ctx->save_for_backward({input, out, log_sum_exp});
    ctx->saved_data["heads"] = heads;
    return out;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto& qkv = saved[0];
    const auto shape = shape_of(qkv, ctx->saved_data["heads"].toInt());
    const auto grad_out = grads[0].contiguous();
    auto grad_qkv = torch::empty_like(qkv);
    cpu::short_attention_backward(shape, qkv.data_ptr<float>(), saved[1].data_ptr<float>(),
                                  saved[2].data_ptr<float>(), grad_out.data_ptr<float>(),
                                  grad_qkv.data_ptr<float>());
    return {grad_qkv, torch::Tensor()};
  }
};

// The kernels cover float32 on the CPU, up to kShortAttentionMaxTokens tokens and heads up to
// kShortAttentionMaxHeadDim wide; a CPU call they do not cover is counted as a fallback.
bool use_short_attention_kernels(const torch::Tensor& qkv, int64_t heads) {
  if (!FastPathScope::policy().attention_kernels || !qkv.device().is_cpu()) return false;
  const bool covered = qkv.scalar_type() == torch::kFloat32 && qkv.size(1) >= 1 &&
                       qkv.size(1) <= cpu::kShortAttentionMaxTokens &&
                       qkv.size(2) / (3 * heads) <= cpu::kShortAttentionMaxHeadDim;
  count_fast_path_call(FastPath::kAttentionKernels, covered);
  return covered;
}

}  // namespace

AttentionImpl::AttentionImpl(int64_t dim, int64_t num_heads_) : num_heads(num_heads_) {
  if (num_heads < 1 || dim % num_heads != 0) {
    throw InputError("model.num_heads = " + std::to_string(num_heads) +
                     ": expected a positive divisor of model.embed_dim = " + std::to_string(dim));
  }
  qkv = register_module("qkv", Linear(dim, 3 * dim));
  proj = register_module("proj", Linear(dim, dim));
  for (const auto& linear : {qkv, proj}) init_vit_linear(linear);
}

torch::Tensor AttentionImpl::forward(const torch::Tensor& x) {
  const auto batch = x.size(0), tokens = x.size(1), dim = x.size(2);
  const auto packed = qkv->forward(x);
  if (use_short_attention_kernels(packed, num_heads)) {
    return proj->forward(ShortSequenceAttention::apply(packed, num_heads));
  }
  // unbind, not three selects: its backward stacks the three gradients in one copy instead of
  // zero-filling three qkv-sized buffers and adding into them.
  const auto q_k_v = packed.view({batch, tokens, 3, num_heads, dim / num_heads})
                         .permute({2, 0, 3, 1, 4})
                         .unbind(0);
  auto out = at::scaled_dot_product_attention(q_k_v[0], q_k_v[1], q_k_v[2]);
  return proj->forward(out.transpose(1, 2).reshape({batch, tokens, dim}));
}

}  // namespace exfusion
