// T5 v1.1 with Hugging Face's layout (see t5.h).
#include "exfusion/models/t5.h"

#include <ATen/ATen.h>

#include <cmath>

#include "exfusion/layers/attention.h"
#include "exfusion/util/error.h"
#include "exfusion/util/init.h"

namespace exfusion {
namespace {

// Gated GELU (tanh) without biases under Hugging Face's names, with nanoT5's init: the layers
// into the hidden units std d_model^-½, the one out of them std d_ff^-½, untruncated.
FfnForm t5_ffn_form(const T5Options& options) {
  auto form = FfnForm::gated_form(Activation::kGeluTanh, /*bias=*/false);
  form.gate_name = "wi_0";
  form.up_name = "wi_1";
  form.down_name = "wo";
  form.up_std = 1.0 / std::sqrt(static_cast<double>(options.d_model));
  form.down_std = 1.0 / std::sqrt(static_cast<double>(options.d_ff));
  form.truncated = false;
  return form;
}

std::string block_path(bool decoder, int64_t block) {
  return std::string(decoder ? "decoder" : "encoder") + ".block." + std::to_string(block);
}

}  // namespace

void T5Options::apply_preset(const std::string& name, const config::Location& at) {
  // Google's T5 v1.1 checkpoints (their config.json files).
  vocab_size = 32128;
  d_kv = 64;
  if (name == "t5-v1_1-small") {
    d_model = 512, d_ff = 1024, num_heads = 6, num_layers = 8, num_decoder_layers = 8;
  } else if (name == "t5-v1_1-base") {
    d_model = 768, d_ff = 2048, num_heads = 12, num_layers = 12, num_decoder_layers = 12;
  } else if (name == "t5-v1_1-large") {
    d_model = 1024, d_ff = 2816, num_heads = 16, num_layers = 24, num_decoder_layers = 24;
  } else {
    config::fail(at, "preset", name, "t5-v1_1-small, t5-v1_1-base or t5-v1_1-large");
  }
}

void T5Options::validate(const config::Location& at) const {
  if (relative_attention_num_buckets % 2 != 0) {
    config::fail(at, "relative_attention_num_buckets", relative_attention_num_buckets,
                 "an even number (half per direction in the encoder)");
  }
}

void T5Options::validate_ffn(const FfnConfig& ffn, const config::Location& at) const {
  ffn.validate_layers(num_layers + num_decoder_layers, at);
}

std::vector<FfnSite> T5Options::ffn_sites() const {
  std::vector<FfnSite> sites;
  const auto form = t5_ffn_form(*this);
  for (int64_t i = 0; i < num_layers; ++i) {
    sites.push_back({block_path(false, i) + ".layer.1.DenseReluDense", i, d_model, d_ff,
                     static_cast<double>(input_length), form});
  }
  for (int64_t j = 0; j < num_decoder_layers; ++j) {
    sites.push_back({block_path(true, j) + ".layer.2.DenseReluDense", num_layers + j, d_model, d_ff,
                     static_cast<double>(target_length), form});
  }
  return sites;
}

TensorShapes T5Options::dense_tensor_shapes() const {
  const int64_t inner = num_heads * d_kv;
  TensorShapes shapes{{"shared.weight", {vocab_size, d_model}}};
  const auto attention = [&](const std::string& prefix, bool table) {
    for (const auto* name : {"q", "k", "v"}) {
      shapes.push_back({prefix + "." + name + ".weight", {inner, d_model}});
    }
    shapes.push_back({prefix + ".o.weight", {d_model, inner}});
    if (table) {
      shapes.push_back({prefix + ".relative_attention_bias.weight",
                        {relative_attention_num_buckets, num_heads}});
    }
  };
  const auto ffn = [&](const std::string& prefix) {
    shapes.push_back({prefix + ".DenseReluDense.wi_0.weight", {d_ff, d_model}});
    shapes.push_back({prefix + ".DenseReluDense.wi_1.weight", {d_ff, d_model}});
    shapes.push_back({prefix + ".DenseReluDense.wo.weight", {d_model, d_ff}});
    shapes.push_back({prefix + ".layer_norm.weight", {d_model}});
  };
  for (const bool decoder : {false, true}) {
    const auto blocks = decoder ? num_decoder_layers : num_layers;
    for (int64_t i = 0; i < blocks; ++i) {
      const auto block = block_path(decoder, i);
      attention(block + ".layer.0.SelfAttention", i == 0);
      shapes.push_back({block + ".layer.0.layer_norm.weight", {d_model}});
      if (decoder) {
        attention(block + ".layer.1.EncDecAttention", false);
        shapes.push_back({block + ".layer.1.layer_norm.weight", {d_model}});
      }
      ffn(block + ".layer." + (decoder ? "2" : "1"));
    }
    shapes.push_back(
        {std::string(decoder ? "decoder" : "encoder") + ".final_layer_norm.weight", {d_model}});
  }
  shapes.push_back({"lm_head.weight", {vocab_size, d_model}});
  return shapes;
}

double T5Options::parameters_outside_ffns() const {
  return values_outside_ffns(dense_tensor_shapes(), ffn_sites());
}

double T5Options::forward_flops_per_sample(const FfnConfig& ffn) const {
  const double d = static_cast<double>(d_model);
  const double inner = static_cast<double>(num_heads * d_kv);
  const double in = static_cast<double>(input_length);
  const double out = static_cast<double>(target_length);
  // q, k, v, o over each position; scores and the weighted sum over each query-key pair.
  const double encoder_attention = in * 4.0 * d * inner + 2.0 * in * in * inner;
  const double decoder_attention = out * 4.0 * d * inner + 2.0 * out * out * inner;
  const double cross_attention =
      out * 2.0 * d * inner + in * 2.0 * d * inner + 2.0 * out * in * inner;
  double macs = static_cast<double>(num_layers) * encoder_attention +
                static_cast<double>(num_decoder_layers) * (decoder_attention + cross_attention);
  for (const auto& site : ffn_sites())
    macs += site.tokens_per_sample * ffn.forward_macs_per_token(site);
  macs += out * d * static_cast<double>(vocab_size);  // lm_head
  return 2.0 * macs;
}

ModelPtr T5Options::build(const FfnConfig& ffn) const {
  auto options = *this;
  options.ffn = ffn;
  return std::make_shared<T5Impl>(std::move(options));
}

torch::Tensor relative_position_bucket(const torch::Tensor& relative, bool bidirectional,
                                       int64_t num_buckets, int64_t max_distance) {
  auto buckets = torch::zeros_like(relative);
  auto distance = relative;
  auto per_direction = num_buckets;
  if (bidirectional) {
    per_direction /= 2;
    buckets = buckets + (relative > 0).to(torch::kLong) * per_direction;
    distance = relative.abs();
  } else {
    distance = -torch::clamp_max(relative, 0);  // the past only: later keys share bucket 0
  }
  const int64_t exact = per_direction / 2;
  // Beyond the exact range, buckets grow with log(distance) up to max_distance; the clamp keeps
  // log(0) out of the positions the exact range answers anyway.
  const auto logarithmic =
      exact + (torch::log(distance.clamp_min(1).to(torch::kFloat32) / static_cast<double>(exact)) /
               std::log(static_cast<double>(max_distance) / static_cast<double>(exact)) *
               static_cast<double>(per_direction - exact))
                  .to(torch::kLong);
  const auto large = torch::clamp_max(logarithmic, per_direction - 1);
  return buckets + torch::where(distance < exact, distance, large);
}

T5AttentionImpl::T5AttentionImpl(const T5Options& options, bool has_relative_attention_bias,
                                 bool bidirectional)
    : heads_(options.num_heads),
      head_dim_(options.d_kv),
      buckets_(options.relative_attention_num_buckets),
      max_distance_(options.relative_attention_max_distance),
      bidirectional_(bidirectional),
      dropout_(options.dropout_rate) {
  const double d = static_cast<double>(options.d_model);
  const int64_t inner = options.num_heads * options.d_kv;
  // nanoT5's (Hugging Face's) init, which leaves out the 1/√d of the scores.
  q = register_module("q",
                      bias_free_linear(options.d_model, inner,
                                       1.0 / std::sqrt(d * static_cast<double>(options.d_kv))));
  k = register_module("k", bias_free_linear(options.d_model, inner, 1.0 / std::sqrt(d)));
  v = register_module("v", bias_free_linear(options.d_model, inner, 1.0 / std::sqrt(d)));
  o = register_module(
      "o", bias_free_linear(inner, options.d_model, 1.0 / std::sqrt(static_cast<double>(inner))));
  if (has_relative_attention_bias) {
    relative_attention_bias = register_module(
        "relative_attention_bias",
        torch::nn::Embedding(options.relative_attention_num_buckets, options.num_heads));
    torch::NoGradGuard no_grad;
    relative_attention_bias->weight.normal_(0.0, 1.0 / std::sqrt(d));
  }
}

std::vector<std::string> T5AttentionImpl::exempt_from_weight_decay() const {
  if (!relative_attention_bias) return {};
  return {"relative_attention_bias.weight"};
}

torch::Tensor T5AttentionImpl::position_bias(int64_t queries, int64_t keys,
                                             const torch::Device& device) const {
  const auto long_on = torch::TensorOptions(device).dtype(torch::kLong);
  const auto relative =
      torch::arange(keys, long_on).unsqueeze(0) - torch::arange(queries, long_on).unsqueeze(1);
  const auto bucket = relative_position_bucket(relative, bidirectional_, buckets_, max_distance_);
  // [queries, keys, heads] → [1, heads, queries, keys]
  return at::embedding(relative_attention_bias->weight, bucket).permute({2, 0, 1}).unsqueeze(0);
}

torch::Tensor T5AttentionImpl::forward(const torch::Tensor& x, const torch::Tensor& memory,
                                       const torch::Tensor& bias) {
  const auto width = q->weight.size(0);
  AttentionOptions options;
  options.heads = heads_;
  options.head_dim = head_dim_;
  options.scale = 1.0;  // T5 scales its initialisation instead
  options.dropout = dropout_;
  if (bias.defined()) options.additive = bias.to(x.scalar_type());
  AttentionInputs inputs;
  if (memory.is_same(x)) {
    // Self-attention: q, k and v as one GEMM of three times the width (fortunes T5, an
    // encoder layer's projections forward and backward on 2 cores: 29 ms against 34); the
    // decoder's sees only the past.
    const auto packed = at::linear(x, torch::cat({q->weight, k->weight, v->weight}));
    inputs = {packed, 0, packed, width, 2 * width};
    options.causal = !bidirectional_;
  } else {
    // Cross-attention: k and v of the encoder's states as one GEMM.
    const auto key_values = at::linear(memory, torch::cat({k->weight, v->weight}));
    inputs = {q->forward(x), 0, key_values, 0, width};
  }
  return o->forward(multi_head_attention(inputs, options, is_training()));
}

T5LayerSelfAttentionImpl::T5LayerSelfAttentionImpl(const T5Options& options,
                                                   bool has_relative_attention_bias,
                                                   bool bidirectional)
    : dropout_(options.dropout_rate) {
  SelfAttention = register_module("SelfAttention",
                                  T5Attention(options, has_relative_attention_bias, bidirectional));
  layer_norm = register_module("layer_norm", RMSNorm(options.d_model, options.layer_norm_epsilon));
}

torch::Tensor T5LayerSelfAttentionImpl::forward(const torch::Tensor& x, const torch::Tensor& bias) {
  const auto normed = layer_norm->forward(x);
  return x + torch::dropout(SelfAttention->forward(normed, normed, bias), dropout_, is_training());
}

T5LayerCrossAttentionImpl::T5LayerCrossAttentionImpl(const T5Options& options)
    : dropout_(options.dropout_rate) {
  EncDecAttention = register_module("EncDecAttention", T5Attention(options, false, false));
  layer_norm = register_module("layer_norm", RMSNorm(options.d_model, options.layer_norm_epsilon));
}

torch::Tensor T5LayerCrossAttentionImpl::forward(const torch::Tensor& x,
                                                 const torch::Tensor& encoder_states) {
  const auto attended = EncDecAttention->forward(layer_norm->forward(x), encoder_states, {});
  return x + torch::dropout(attended, dropout_, is_training());
}

T5LayerFFImpl::T5LayerFFImpl(const T5Options& options, std::shared_ptr<FeedForwardImpl> ffn)
    : dropout_(options.dropout_rate) {
  DenseReluDense = register_module("DenseReluDense", std::move(ffn));
  layer_norm = register_module("layer_norm", RMSNorm(options.d_model, options.layer_norm_epsilon));
}

torch::Tensor T5LayerFFImpl::forward(const torch::Tensor& x) {
  return x +
         torch::dropout(DenseReluDense->forward(layer_norm->forward(x)), dropout_, is_training());
}

T5BlockImpl::T5BlockImpl(const T5Options& options, bool is_decoder,
                         bool has_relative_attention_bias, std::shared_ptr<FeedForwardImpl> ffn) {
  layer = register_module("layer", torch::nn::ModuleList());
  self_attention = T5LayerSelfAttention(options, has_relative_attention_bias, !is_decoder);
  layer->push_back(self_attention);
  if (is_decoder) {
    cross_attention = T5LayerCrossAttention(options);
    layer->push_back(cross_attention);
  }
  feed_forward = T5LayerFF(options, std::move(ffn));
  layer->push_back(feed_forward);
}

torch::Tensor T5BlockImpl::forward(const torch::Tensor& x, const torch::Tensor& bias,
                                   const torch::Tensor& encoder_states) {
  auto y = self_attention->forward(x, bias);
  if (cross_attention) y = cross_attention->forward(y, encoder_states);
  return feed_forward->forward(y);
}

T5StackImpl::T5StackImpl(const T5Options& options, bool is_decoder,
                         const std::vector<FfnSite>& sites)
    : dropout_(options.dropout_rate) {
  block = register_module("block", torch::nn::ModuleList());
  const auto blocks = is_decoder ? options.num_decoder_layers : options.num_layers;
  for (int64_t i = 0; i < blocks; ++i) {
    const auto& site = sites.at(static_cast<size_t>((is_decoder ? options.num_layers : 0) + i));
    blocks_.push_back(T5Block(options, is_decoder, i == 0, options.ffn.build(site)));
    block->push_back(blocks_.back());
  }
  final_layer_norm =
      register_module("final_layer_norm", RMSNorm(options.d_model, options.layer_norm_epsilon));
}

torch::Tensor T5StackImpl::forward(const torch::Tensor& embedded,
                                   const torch::Tensor& encoder_states) {
  auto x = torch::dropout(embedded, dropout_, is_training());
  const auto length = x.size(1);
  // Block 0's table, shared by every block of the stack (the decoder's self-attention masks
  // the future itself).
  const auto bias =
      blocks_.front()->self_attention->SelfAttention->position_bias(length, length, x.device());
  for (auto& one : blocks_) x = one->forward(x, bias, encoder_states);
  return torch::dropout(final_layer_norm->forward(x), dropout_, is_training());
}

T5Impl::T5Impl(T5Options options_) : options(std::move(options_)) {
  options.validate();
  options.validate_ffn(options.ffn, {"", "ffn"});
  const auto sites = options.ffn_sites();
  shared = register_module("shared", torch::nn::Embedding(options.vocab_size, options.d_model));
  encoder = register_module("encoder", T5Stack(options, /*is_decoder=*/false, sites));
  decoder = register_module("decoder", T5Stack(options, /*is_decoder=*/true, sites));
  lm_head = register_module("lm_head", bias_free_linear(options.d_model, options.vocab_size, 1.0));
  torch::NoGradGuard no_grad;
  shared->weight.normal_(0.0, 1.0);
}

torch::Tensor T5Impl::forward(const torch::Tensor& inputs) {
  return encoder->forward(shared->forward(inputs));
}

torch::Tensor T5Impl::forward_encoder_decoder(const torch::Tensor& inputs,
                                              const torch::Tensor& decoder_inputs) {
  const auto encoded = forward(inputs);
  return lm_head->forward(decoder->forward(shared->forward(decoder_inputs), encoded));
}

}  // namespace exfusion
