// Llama with Hugging Face's layout (see llama.h).
#include "exfusion/models/llama.h"

#include <ATen/ATen.h>

#include "exfusion/layers/attention.h"
#include "exfusion/util/error.h"

namespace exfusion {
namespace {

// SwiGLU without biases under Hugging Face's names, drawn from an untruncated normal.
FfnForm llama_ffn_form(const LlamaOptions& options) {
  auto form = FfnForm::gated_form(Activation::kSilu, /*bias=*/false);
  form.gate_name = "gate_proj";
  form.up_name = "up_proj";
  form.down_name = "down_proj";
  form.up_std = options.initializer_range;
  form.down_std = options.initializer_range;
  form.truncated = false;
  return form;
}

std::string layer_path(int64_t layer) { return "model.layers." + std::to_string(layer); }

}  // namespace

void LlamaOptions::apply_preset(const std::string& name, const config::Location& at) {
  if (name == "llama-cpu-10m") {
    vocab_size = 8192, hidden_size = 256, intermediate_size = 704, num_hidden_layers = 8;
    num_attention_heads = 8, num_key_value_heads = 4, head_dim = 0;
    rms_norm_eps = 1e-6, rope_theta = 10000.0, max_position_embeddings = 1024;
    sequence_length = 256;
  } else if (name == "llama-2-7b") {
    // meta-llama/Llama-2-7b-hf's config.json.
    vocab_size = 32000, hidden_size = 4096, intermediate_size = 11008, num_hidden_layers = 32;
    num_attention_heads = 32, num_key_value_heads = 32, head_dim = 0;
    rms_norm_eps = 1e-5, rope_theta = 10000.0, max_position_embeddings = 4096;
    sequence_length = 4096;
  } else {
    config::fail(at, "preset", name, "llama-cpu-10m or llama-2-7b");
  }
}

void LlamaOptions::validate(const config::Location& at) const {
  if (head_dim == 0 && hidden_size % num_attention_heads != 0) {
    config::fail(
        at, "num_attention_heads", num_attention_heads,
        "a divisor of hidden_size = " + std::to_string(hidden_size) + " (or set head_dim)");
  }
  if (num_attention_heads % num_key_value_heads != 0) {
    config::fail(at, "num_key_value_heads", num_key_value_heads,
                 "a divisor of num_attention_heads = " + std::to_string(num_attention_heads));
  }
  if (head_width() % 2 != 0) {
    config::fail(at, "head_dim", head_width(), "an even head width (rotary pairs its halves)");
  }
  if (sequence_length > max_position_embeddings) {
    config::fail(at, "sequence_length", sequence_length,
                 "at most max_position_embeddings = " + std::to_string(max_position_embeddings));
  }
}

void LlamaOptions::validate_ffn(const FfnConfig& ffn, const config::Location& at) const {
  ffn.validate_layers(num_hidden_layers, at);
}

std::vector<FfnSite> LlamaOptions::ffn_sites() const {
  std::vector<FfnSite> sites;
  const auto form = llama_ffn_form(*this);
  for (int64_t i = 0; i < num_hidden_layers; ++i) {
    sites.push_back({layer_path(i) + ".mlp", i, hidden_size, intermediate_size,
                     static_cast<double>(sequence_length), form});
  }
  return sites;
}

TensorShapes LlamaOptions::dense_tensor_shapes() const {
  const int64_t queries = num_attention_heads * head_width();
  const int64_t key_values = num_key_value_heads * head_width();
  TensorShapes shapes{{"model.embed_tokens.weight", {vocab_size, hidden_size}}};
  for (int64_t i = 0; i < num_hidden_layers; ++i) {
    const auto layer = layer_path(i);
    shapes.push_back({layer + ".self_attn.q_proj.weight", {queries, hidden_size}});
    shapes.push_back({layer + ".self_attn.k_proj.weight", {key_values, hidden_size}});
    shapes.push_back({layer + ".self_attn.v_proj.weight", {key_values, hidden_size}});
    shapes.push_back({layer + ".self_attn.o_proj.weight", {hidden_size, queries}});
    shapes.push_back({layer + ".mlp.gate_proj.weight", {intermediate_size, hidden_size}});
    shapes.push_back({layer + ".mlp.up_proj.weight", {intermediate_size, hidden_size}});
    shapes.push_back({layer + ".mlp.down_proj.weight", {hidden_size, intermediate_size}});
    shapes.push_back({layer + ".input_layernorm.weight", {hidden_size}});
    shapes.push_back({layer + ".post_attention_layernorm.weight", {hidden_size}});
  }
  shapes.push_back({"model.norm.weight", {hidden_size}});
  if (!tie_word_embeddings) shapes.push_back({"lm_head.weight", {vocab_size, hidden_size}});
  return shapes;
}

double LlamaOptions::parameters_outside_ffns() const {
  return values_outside_ffns(dense_tensor_shapes(), ffn_sites());
}

double LlamaOptions::forward_flops_per_sample(const FfnConfig& ffn) const {
  const double d = static_cast<double>(hidden_size);
  const double queries = static_cast<double>(num_attention_heads * head_width());
  const double key_values = static_cast<double>(num_key_value_heads * head_width());
  const double length = static_cast<double>(sequence_length);
  // q, k, v, o over each position; scores and the weighted sum over each query-key pair (the
  // masked half counted, as the papers count attention).
  const double attention =
      length * d * (2.0 * queries + 2.0 * key_values) + 2.0 * length * length * queries;
  double macs = static_cast<double>(num_hidden_layers) * attention;
  for (const auto& site : ffn_sites())
    macs += site.tokens_per_sample * ffn.forward_macs_per_token(site);
  macs += length * d * static_cast<double>(vocab_size);  // lm_head
  return 2.0 * macs;
}

ModelPtr LlamaOptions::build(const FfnConfig& ffn) const {
  auto options = *this;
  options.ffn = ffn;
  return std::make_shared<LlamaImpl>(std::move(options));
}

std::pair<torch::Tensor, torch::Tensor> rotary_tables(int64_t length, int64_t head_dim,
                                                      double theta, const torch::Device& device) {
  const auto floats = torch::TensorOptions(device).dtype(torch::kFloat32);
  const auto exponents =
      torch::arange(0, head_dim, 2, torch::TensorOptions(device).dtype(torch::kInt64))
          .to(torch::kFloat32) /
      static_cast<double>(head_dim);
  const auto inverse_frequency = 1.0 / torch::pow(theta, exponents);
  const auto angles = torch::outer(torch::arange(length, floats), inverse_frequency);
  const auto both = torch::cat({angles, angles}, -1);
  return {both.cos(), both.sin()};
}

torch::Tensor apply_rotary(const torch::Tensor& x, const torch::Tensor& cos,
                           const torch::Tensor& sin) {
  const auto half = x.size(-1) / 2;
  const auto rotated = torch::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
  // cos, sin [L, head_dim] against x [B, L, heads, head_dim]
  return x * cos.unsqueeze(1).to(x.scalar_type()) + rotated * sin.unsqueeze(1).to(x.scalar_type());
}

LlamaAttentionImpl::LlamaAttentionImpl(const LlamaOptions& options)
    : heads_(options.num_attention_heads),
      kv_heads_(options.num_key_value_heads),
      head_dim_(options.head_width()) {
  const int64_t d = options.hidden_size;
  const double std = options.initializer_range;
  q_proj = register_module("q_proj", bias_free_linear(d, heads_ * head_dim_, std));
  k_proj = register_module("k_proj", bias_free_linear(d, kv_heads_ * head_dim_, std));
  v_proj = register_module("v_proj", bias_free_linear(d, kv_heads_ * head_dim_, std));
  o_proj = register_module("o_proj", bias_free_linear(heads_ * head_dim_, d, std));
}

torch::Tensor LlamaAttentionImpl::forward(const torch::Tensor& x, const torch::Tensor& cos,
                                          const torch::Tensor& sin, LlamaLayerCache* cache,
                                          int64_t past) {
  const auto batch = x.size(0), length = x.size(1);
  const auto queries = heads_ * head_dim_, key_values = kv_heads_ * head_dim_;
  // q, k and v as one GEMM.
  const auto packed = at::linear(x, torch::cat({q_proj->weight, k_proj->weight, v_proj->weight}));
  const auto q = apply_rotary(
      packed.narrow(-1, 0, queries).view({batch, length, heads_, head_dim_}), cos, sin);
  auto k = apply_rotary(
      packed.narrow(-1, queries, key_values).view({batch, length, kv_heads_, head_dim_}), cos, sin);
  auto v = packed.narrow(-1, queries + key_values, key_values)
               .view({batch, length, kv_heads_, head_dim_});
  if (cache != nullptr) {
    cache->keys.narrow(1, past, length).copy_(k);
    cache->values.narrow(1, past, length).copy_(v);
    k = cache->keys.narrow(1, 0, past + length);
    v = cache->values.narrow(1, 0, past + length);
  }
  const auto keys = k.size(1);
  if (kv_heads_ < heads_) {
    // Each key/value head serves heads / kv_heads consecutive query heads (transformers'
    // repeat_kv); autograd sums the copies' gradients back.
    const auto group = heads_ / kv_heads_;
    k = k.unsqueeze(3).expand({batch, keys, kv_heads_, group, head_dim_});
    v = v.unsqueeze(3).expand({batch, keys, kv_heads_, group, head_dim_});
  }
  const auto key_value_rows =
      torch::cat({k.reshape({batch, keys, queries}), v.reshape({batch, keys, queries})}, -1);
  auto options = AttentionOptions::standard(heads_, head_dim_);
  // With a cache, query i (position past + i) sees keys j ≤ i + past: causal with Tk − Tq = past.
  options.causal = true;
  const auto attended = multi_head_attention(
      {q.reshape({batch, length, queries}), 0, key_value_rows, 0, queries}, options, is_training());
  return o_proj->forward(attended);
}

LlamaLayerCache LlamaAttentionImpl::empty_cache(int64_t batch, int64_t capacity) const {
  const auto options = q_proj->weight.options().requires_grad(false);
  return {torch::zeros({batch, capacity, kv_heads_, head_dim_}, options),
          torch::zeros({batch, capacity, kv_heads_, head_dim_}, options)};
}

LlamaDecoderLayerImpl::LlamaDecoderLayerImpl(const LlamaOptions& options,
                                             std::shared_ptr<FeedForwardImpl> ffn) {
  self_attn = register_module("self_attn", LlamaAttention(options));
  mlp = register_module("mlp", std::move(ffn));
  input_layernorm =
      register_module("input_layernorm", RMSNorm(options.hidden_size, options.rms_norm_eps));
  post_attention_layernorm = register_module("post_attention_layernorm",
                                             RMSNorm(options.hidden_size, options.rms_norm_eps));
}

torch::Tensor LlamaDecoderLayerImpl::forward(const torch::Tensor& x, const torch::Tensor& cos,
                                             const torch::Tensor& sin, LlamaLayerCache* cache,
                                             int64_t past) {
  const auto y = x + self_attn->forward(input_layernorm->forward(x), cos, sin, cache, past);
  return y + mlp->forward(post_attention_layernorm->forward(y));
}

LlamaBodyImpl::LlamaBodyImpl(const LlamaOptions& options)
    : head_dim_(options.head_width()), theta_(options.rope_theta) {
  embed_tokens = register_module("embed_tokens",
                                 torch::nn::Embedding(options.vocab_size, options.hidden_size));
  {
    const torch::NoGradGuard no_grad;
    embed_tokens->weight.normal_(0.0, options.initializer_range);
  }
  layers = register_module("layers", torch::nn::ModuleList());
  const auto sites = options.ffn_sites();
  for (const auto& site : sites) {
    layers_.push_back(LlamaDecoderLayer(options, options.ffn.build(site)));
    layers->push_back(layers_.back());
  }
  norm = register_module("norm", RMSNorm(options.hidden_size, options.rms_norm_eps));
}

torch::Tensor LlamaBodyImpl::forward(const torch::Tensor& inputs, LlamaCache* cache) {
  auto x = embed_tokens->forward(inputs);
  const int64_t past = cache != nullptr ? cache->filled : 0, length = inputs.size(1);
  auto [cos, sin] = rotary_tables(past + length, head_dim_, theta_, inputs.device());
  cos = cos.narrow(0, past, length);
  sin = sin.narrow(0, past, length);
  for (size_t i = 0; i < layers_.size(); ++i) {
    x = layers_[i]->forward(x, cos, sin, cache != nullptr ? &cache->layers[i] : nullptr, past);
  }
  if (cache != nullptr) cache->filled += length;
  return norm->forward(x);
}

std::unique_ptr<LlamaCache> LlamaBodyImpl::empty_cache(int64_t batch, int64_t capacity) const {
  auto cache = std::make_unique<LlamaCache>();
  for (const auto& layer : layers_) {
    cache->layers.push_back(layer->self_attn->empty_cache(batch, capacity));
  }
  return cache;
}

LlamaImpl::LlamaImpl(LlamaOptions options_) : options(std::move(options_)) {
  options.validate();
  options.validate_ffn(options.ffn, {"", "ffn"});
  model = register_module("model", LlamaBody(options));
  if (!options.tie_word_embeddings) {
    lm_head = register_module("lm_head", bias_free_linear(options.hidden_size, options.vocab_size,
                                                          options.initializer_range));
  }
}

torch::Tensor LlamaImpl::forward(const torch::Tensor& inputs) {
  const auto hidden = model->forward(inputs);
  return lm_head ? lm_head->forward(hidden) : at::linear(hidden, model->embed_tokens->weight);
}

std::unique_ptr<DecodingState> LlamaImpl::start_decoding(int64_t batch, int64_t capacity) const {
  if (capacity > options.max_position_embeddings) {
    throw InputError("decoding " + std::to_string(capacity) +
                     " positions: past this model's max_position_embeddings (" +
                     std::to_string(options.max_position_embeddings) + ")");
  }
  return model->empty_cache(batch, capacity);
}

torch::Tensor LlamaImpl::decode(const torch::Tensor& tokens, DecodingState& state) {
  auto& cache = dynamic_cast<LlamaCache&>(state);
  const auto capacity = cache.layers.empty() ? 0 : cache.layers.front().keys.size(1);
  if (cache.filled + tokens.size(1) > capacity) {
    throw InputError("decoding past the " + std::to_string(capacity) +
                     " positions the decoding state was made for");
  }
  const auto hidden = model->forward(tokens, &cache);
  return lm_head ? lm_head->forward(hidden) : at::linear(hidden, model->embed_tokens->weight);
}

}  // namespace exfusion
