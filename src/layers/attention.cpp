// Multi-head attention (see attention.h): on the CPU, calls the kernels of
// attention_cpu_kernels.cpp cover go through them as one autograd node from the linears' rows to
// the heads' outputs; anything else through the reference, scaled_dot_product_attention or its
// CPU composite.
#include "exfusion/layers/attention.h"

#include <torch/autograd.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>

#include "attention_cpu_kernels.h"
#include "exfusion/layers/linear.h"
#include "exfusion/util/error.h"
#include "exfusion/util/fast_paths.h"
#include "exfusion/util/init.h"

namespace exfusion {
namespace {

cpu::AttentionShape kernel_shape(const AttentionInputs& inputs, const AttentionOptions& options) {
  cpu::AttentionShape shape;
  shape.batch = inputs.query_rows.size(0);
  shape.heads = options.heads;
  shape.queries = inputs.query_rows.size(1);
  shape.keys = inputs.key_value_rows.size(1);
  shape.head_dim = options.head_dim;
  shape.scale = static_cast<float>(options.scale);
  shape.causal = options.causal;
  shape.additive_batches = options.additive.defined() ? options.additive.size(0) : 0;
  return shape;
}

// Whether the q, k and v column ranges of a row tensor `width` wide cover all of it (so the
// kernels' gradient writes every element and needs no zeroing first).
bool parts_cover(std::vector<int64_t> columns, int64_t inner, int64_t width) {
  std::sort(columns.begin(), columns.end());
  for (size_t i = 1; i < columns.size(); ++i) {
    if (columns[i] - columns[i - 1] < inner) return false;
  }
  return static_cast<int64_t>(columns.size()) * inner == width;
}

// The kernels as one autograd node: inputs the query rows, the key/value rows (the same tensor
// for a packed qkv) and the additive term (an empty tensor for none: autograd functions take no
// undefined inputs); columns = {query, key, value}.
struct AttentionOnCpu : public torch::autograd::Function<AttentionOnCpu> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx,
                               const torch::Tensor& query_rows, const torch::Tensor& key_value_rows,
                               const torch::Tensor& additive, std::vector<int64_t> columns,
                               int64_t heads, int64_t head_dim, double scale, bool causal) {
    const bool packed = query_rows.is_same(key_value_rows);
    const auto q_rows = query_rows.contiguous();
    const auto kv_rows = packed ? q_rows : key_value_rows.contiguous();
    const auto term = additive.numel() > 0 ? additive.contiguous() : torch::Tensor();
    AttentionOptions options;
    options.heads = heads, options.head_dim = head_dim, options.scale = scale;
    options.causal = causal, options.additive = term;
    const auto shape = kernel_shape({q_rows, columns[0], kv_rows, columns[1], columns[2]}, options);
    auto out = torch::empty({shape.batch, shape.queries, heads * head_dim}, q_rows.options());
    auto log_sum_exp = torch::empty({shape.batch * heads, shape.queries}, q_rows.options());
    cpu::attention_forward(shape, operands(shape, q_rows, kv_rows, term, columns),
                           out.data_ptr<float>(), log_sum_exp.data_ptr<float>());
    ctx->save_for_backward({q_rows, kv_rows, term, out, log_sum_exp});
    ctx->saved_data["columns"] = columns;
    ctx->saved_data["heads"] = heads;
    ctx->saved_data["head_dim"] = head_dim;
    ctx->saved_data["scale"] = scale;
    ctx->saved_data["causal"] = causal;
    ctx->saved_data["packed"] = packed;
    ctx->saved_data["additive_grad"] = term.defined() && additive.requires_grad();
    return out;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto &q_rows = saved[0], &kv_rows = saved[1], &term = saved[2];
    const auto columns = ctx->saved_data["columns"].toIntVector();
    const bool packed = ctx->saved_data["packed"].toBool();
    AttentionOptions options;
    options.heads = ctx->saved_data["heads"].toInt();
    options.head_dim = ctx->saved_data["head_dim"].toInt();
    options.scale = ctx->saved_data["scale"].toDouble();
    options.causal = ctx->saved_data["causal"].toBool();
    options.additive = term;
    const auto shape = kernel_shape({q_rows, columns[0], kv_rows, columns[1], columns[2]}, options);
    const auto grad_out = grads[0].contiguous();
    const int64_t inner = options.heads * options.head_dim;
    const auto gradient_for = [&](const torch::Tensor& rows, std::vector<int64_t> parts) {
      return parts_cover(std::move(parts), inner, rows.size(2)) ? torch::empty_like(rows)
                                                                : torch::zeros_like(rows);
    };
    const auto grad_q = packed ? gradient_for(q_rows, columns) : gradient_for(q_rows, {columns[0]});
    const auto grad_kv = packed ? grad_q : gradient_for(kv_rows, {columns[1], columns[2]});
    torch::Tensor grad_additive;
    if (ctx->saved_data["additive_grad"].toBool()) grad_additive = torch::empty_like(term);
    cpu::AttentionGradients gradients;
    gradients.q = grad_q.data_ptr<float>() + columns[0];
    gradients.k = grad_kv.data_ptr<float>() + columns[1];
    gradients.v = grad_kv.data_ptr<float>() + columns[2];
    gradients.additive = grad_additive.defined() ? grad_additive.data_ptr<float>() : nullptr;
    cpu::attention_backward(shape, operands(shape, q_rows, kv_rows, term, columns),
                            saved[3].data_ptr<float>(), saved[4].data_ptr<float>(),
                            grad_out.data_ptr<float>(), gradients);
    return {grad_q,          packed ? torch::Tensor() : grad_kv,
            grad_additive,   torch::Tensor(),
            torch::Tensor(), torch::Tensor(),
            torch::Tensor(), torch::Tensor()};
  }

  static cpu::AttentionOperands operands(const cpu::AttentionShape& shape,
                                         const torch::Tensor& q_rows, const torch::Tensor& kv_rows,
                                         const torch::Tensor& term,
                                         const std::vector<int64_t>& columns) {
    cpu::AttentionOperands in;
    in.q = q_rows.data_ptr<float>() + columns[0];
    in.k = kv_rows.data_ptr<float>() + columns[1];
    in.v = kv_rows.data_ptr<float>() + columns[2];
    in.q_row_stride = q_rows.size(2);
    in.kv_row_stride = kv_rows.size(2);
    in.additive = shape.additive_batches > 0 ? term.data_ptr<float>() : nullptr;
    return in;
  }
};

// Whether this call goes through the kernels: float32 on the CPU, the sizes they take, no
// dropout in effect; a CPU call they do not cover is counted as a fallback.
bool use_attention_kernels(const AttentionInputs& inputs, const AttentionOptions& options,
                           bool training) {
  if (!FastPathScope::policy().attention_kernels || !inputs.query_rows.device().is_cpu()) {
    return false;
  }
  const auto is_float = [](const torch::Tensor& t) {
    return !t.defined() || t.scalar_type() == torch::kFloat32;
  };
  const bool covered = is_float(inputs.query_rows) && is_float(inputs.key_value_rows) &&
                       is_float(options.additive) && (!training || options.dropout == 0.0) &&
                       cpu::attention_kernels_cover(kernel_shape(inputs, options));
  count_fast_path_call(FastPath::kAttentionKernels, covered);
  return covered;
}

// [B, T, W] rows → [B, heads, T, head_dim] from `column`.
torch::Tensor heads_of(const torch::Tensor& rows, int64_t column, const AttentionOptions& o) {
  return rows.narrow(-1, column, o.heads * o.head_dim)
      .unflatten(-1, {o.heads, o.head_dim})
      .transpose(1, 2);
}

torch::Tensor reference_attention(const AttentionInputs& inputs, const AttentionOptions& o,
                                  bool training) {
  const auto batch = inputs.query_rows.size(0), queries = inputs.query_rows.size(1);
  const auto keys = inputs.key_value_rows.size(1), inner = o.heads * o.head_dim;
  torch::Tensor q, k, v;
  if (inputs.query_rows.is_same(inputs.key_value_rows) && inputs.query_column == 0 &&
      inputs.key_column == inner && inputs.value_column == 2 * inner &&
      inputs.query_rows.size(2) == 3 * inner) {
    // A packed qkv: unbind, not three narrows, so that its backward stacks the three gradients
    // in one copy instead of zero-filling three qkv-sized buffers and adding into them.
    const auto q_k_v = inputs.query_rows.view({batch, queries, 3, o.heads, o.head_dim})
                           .permute({2, 0, 3, 1, 4})
                           .unbind(0);
    q = q_k_v[0], k = q_k_v[1], v = q_k_v[2];
  } else {
    q = heads_of(inputs.query_rows, inputs.query_column, o);
    k = heads_of(inputs.key_value_rows, inputs.key_column, o);
    v = heads_of(inputs.key_value_rows, inputs.value_column, o);
  }
  torch::Tensor mask;  // broadcastable to [B, heads, Tq, Tk]
  if (o.additive.defined()) {
    const auto period = o.additive.size(0);
    mask = period == 1 ? o.additive
                       : o.additive.unsqueeze(0)
                             .expand({batch / period, period, o.heads, queries, keys})
                             .reshape({batch, o.heads, queries, keys});
    mask = mask.to(q.scalar_type());
  }
  if (o.causal) {
    const auto future =
        torch::ones({queries, keys}, torch::TensorOptions(q.device()).dtype(torch::kBool))
            .triu(keys - queries + 1);
    mask = (mask.defined() ? mask : torch::zeros({1, 1, queries, keys}, q.options()))
               .masked_fill(future, -std::numeric_limits<float>::infinity());
  }
  const double dropout = training ? o.dropout : 0.0;
  torch::Tensor out;
  if (mask.defined() && q.is_cpu()) {
    const auto scores = at::baddbmm(
        mask.expand({batch, o.heads, queries, keys}).reshape({-1, queries, keys}),
        q.reshape({-1, queries, o.head_dim}), k.reshape({-1, keys, o.head_dim}).transpose(1, 2),
        /*beta=*/1.0, /*alpha=*/o.scale);
    auto probabilities = at::softmax(scores, -1);
    if (dropout > 0) probabilities = at::dropout(probabilities, dropout, true);
    out = at::bmm(probabilities, v.reshape({-1, keys, o.head_dim}))
              .view({batch, o.heads, queries, o.head_dim});
  } else {
    out = at::scaled_dot_product_attention(
        q, k, v, mask.defined() ? std::optional(mask) : std::nullopt, dropout,
        /*is_causal=*/false, o.scale);
  }
  return out.transpose(1, 2).reshape({batch, queries, inner});
}

}  // namespace

AttentionOptions AttentionOptions::standard(int64_t heads, int64_t head_dim) {
  AttentionOptions options;
  options.heads = heads;
  options.head_dim = head_dim;
  options.scale = 1.0 / std::sqrt(static_cast<double>(head_dim));
  return options;
}

torch::Tensor multi_head_attention(const AttentionInputs& inputs, const AttentionOptions& options,
                                   bool training) {
  if (use_attention_kernels(inputs, options, training)) {
    return AttentionOnCpu::apply(
        inputs.query_rows, inputs.key_value_rows,
        options.additive.defined() ? options.additive
                                   : torch::empty({0}, inputs.query_rows.options()),
        std::vector<int64_t>{inputs.query_column, inputs.key_column, inputs.value_column},
        options.heads, options.head_dim, options.scale, options.causal);
  }
  return reference_attention(inputs, options, training);
}

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
  const auto dim = x.size(2);
  const auto packed = qkv->forward(x);
  return proj->forward(multi_head_attention({packed, 0, packed, dim, 2 * dim},
                                            AttentionOptions::standard(num_heads, dim / num_heads),
                                            is_training()));
}

}  // namespace exfusion
