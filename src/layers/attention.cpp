// Multi-head self-attention (see attention.h).
#include "exfusion/layers/attention.h"

#include "exfusion/layers/linear.h"
#include "exfusion/util/error.h"
#include "exfusion/util/init.h"

namespace exfusion {

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
  // unbind, not three selects: its backward stacks the three gradients in one copy instead of
  // zero-filling three qkv-sized buffers and adding into them.
  const auto q_k_v = qkv->forward(x)
                         .view({batch, tokens, 3, num_heads, dim / num_heads})
                         .permute({2, 0, 3, 1, 4})
                         .unbind(0);
  auto out = at::scaled_dot_product_attention(q_k_v[0], q_k_v[1], q_k_v[2]);
  return proj->forward(out.transpose(1, 2).reshape({batch, tokens, dim}));
}

}  // namespace exfusion
