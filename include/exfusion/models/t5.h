// T5 v1.1 with Hugging Face T5ForConditionalGeneration's names and layout (SPEC §3): RMS norms
// without mean, relative position buckets (table in block 0 of each stack, bidirectional in the
// encoder, causal in the decoder), attention without 1/√d, a gated-GELU FFN (wi_0, wi_1, wo; no
// biases; tanh GELU) at every block of both stacks, an untied lm_head, nanoT5's initialisation.
// The model is kind "t5"; its FFNs come from the run's `ffn` section.
#pragma once
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <memory>
#include <string>
#include <vector>

#include "exfusion/config/fields.h"
#include "exfusion/layers/capabilities.h"
#include "exfusion/layers/linear.h"
#include "exfusion/layers/rms_norm.h"
#include "exfusion/models/ffn_config.h"
#include "exfusion/models/model.h"

namespace exfusion {

// The keys are Hugging Face's T5Config's, so a config.json reads as a model section.
struct T5Options {
  int64_t vocab_size = 32128;
  int64_t d_model = 768;
  int64_t d_kv = 64;
  int64_t d_ff = 2048;
  int64_t num_layers = 12;
  int64_t num_decoder_layers = 12;
  int64_t num_heads = 12;
  int64_t relative_attention_num_buckets = 32;
  int64_t relative_attention_max_distance = 128;
  double layer_norm_epsilon = 1e-6;
  double dropout_rate = 0.0;
  // One training sample's lengths (span corruption's 512 inputs → 114 targets): what FLOPs, the
  // bench and the task's data are sized by. The model itself takes any length.
  int64_t input_length = 512;
  int64_t target_length = 114;
  FfnConfig ffn;  // not a field of the model section: the run's `ffn` section

  template <class Fields>
  void fields(Fields& f) {
    f("vocab_size", vocab_size, "token ids in [0, vocab_size)",
      config::in_range<int64_t>(2, 1 << 24));
    f("d_model", d_model, "the width of every block", config::in_range<int64_t>(1, 65536));
    f("d_kv", d_kv, "width of each attention head", config::in_range<int64_t>(1, 4096));
    f("d_ff", d_ff, "the FFN's hidden width", config::in_range<int64_t>(1, 1 << 20));
    f("num_layers", num_layers, "encoder blocks", config::in_range<int64_t>(1, 1024));
    f("num_decoder_layers", num_decoder_layers, "decoder blocks",
      config::in_range<int64_t>(1, 1024));
    f("num_heads", num_heads, "attention heads", config::in_range<int64_t>(1, 1024));
    f("relative_attention_num_buckets", relative_attention_num_buckets,
      "relative position buckets (half per direction in the encoder)",
      config::in_range<int64_t>(2, 4096));
    f("relative_attention_max_distance", relative_attention_max_distance,
      "the distance beyond which positions share the last bucket",
      config::in_range<int64_t>(2, 1 << 20));
    f("layer_norm_epsilon", layer_norm_epsilon, "epsilon of every RMS norm",
      config::Check<double>{"a positive epsilon below 1", [](double v) { return v > 0 && v < 1; }});
    f("dropout_rate", dropout_rate, "dropout after embeddings, attention and FFNs (nanoT5: 0)",
      config::Check<double>{"a rate in [0, 1)", [](double v) { return v >= 0 && v < 1; }});
    f("input_length", input_length, "encoder tokens per training sample",
      config::in_range<int64_t>(1, 1 << 20));
    f("target_length", target_length, "decoder tokens per training sample",
      config::in_range<int64_t>(1, 1 << 20));
  }
  // `preset: t5-v1_1-small|base|large` sets the widths, heads and depths of Google's
  // checkpoints (vocabulary 32128).
  void apply_preset(const std::string& name, const config::Location& at);
  void validate(const config::Location& at = {"", "model"}) const;

  // The model-kind interface (models/model.h).
  ModelPtr build(const FfnConfig& ffn) const;
  double forward_flops_per_sample(const FfnConfig& ffn) const;
  void validate_ffn(const FfnConfig& ffn, const config::Location& at) const;
  std::vector<std::vector<int64_t>> input_shapes() const {
    return {{input_length}, {target_length}};
  }
  int64_t num_outputs() const { return vocab_size; }
  // encoder.block.<i>.layer.1.DenseReluDense (index i), then
  // decoder.block.<j>.layer.2.DenseReluDense (index num_layers + j): `ffn.layers` counts the
  // encoder's blocks first.
  std::vector<FfnSite> ffn_sites() const;
  TensorShapes dense_tensor_shapes() const;
  double parameters_outside_ffns() const;
};

// The relative-position bucket of each (key − query) offset in `relative` (int64), as T5
// defines it: exact buckets for short offsets, logarithmic ones up to `max_distance`; half the
// buckets per direction when `bidirectional`, else only the past (causal).
torch::Tensor relative_position_bucket(const torch::Tensor& relative, bool bidirectional,
                                       int64_t num_buckets, int64_t max_distance);

// Multi-head attention as T5 has it: q, k, v, o without biases, no 1/√d scaling, an additive
// position bias; the first block of a stack owns the bias table (relative_attention_bias).
class T5AttentionImpl : public torch::nn::Module, public ExemptFromWeightDecay {
 public:
  T5AttentionImpl(const T5Options& options, bool has_relative_attention_bias, bool bidirectional);
  // The bias [1, heads, queries, keys] of the table, for `queries` × `keys` positions.
  torch::Tensor position_bias(int64_t queries, int64_t keys, const torch::Device& device) const;
  // Attention of `x` [B, Lq, D] over `memory` [B, Lk, D] (x itself for self-attention), with the
  // additive `bias` [1 or B, heads, Lq, Lk] (undefined: none).
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& memory,
                        const torch::Tensor& bias);
  std::vector<std::string> exempt_from_weight_decay() const override;

  Linear q{nullptr}, k{nullptr}, v{nullptr}, o{nullptr};
  torch::nn::Embedding relative_attention_bias{nullptr};  // block 0 only

 private:
  int64_t heads_, head_dim_, buckets_, max_distance_;
  bool bidirectional_;
  double dropout_;
};
TORCH_MODULE(T5Attention);

// A residual sub-layer: norm, then attention or the FFN, then dropout, added to the input.
class T5LayerSelfAttentionImpl : public torch::nn::Module {
 public:
  T5LayerSelfAttentionImpl(const T5Options& options, bool has_relative_attention_bias,
                           bool bidirectional);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& bias);
  T5Attention SelfAttention{nullptr};
  RMSNorm layer_norm{nullptr};

 private:
  double dropout_;
};
TORCH_MODULE(T5LayerSelfAttention);

class T5LayerCrossAttentionImpl : public torch::nn::Module {
 public:
  explicit T5LayerCrossAttentionImpl(const T5Options& options);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& encoder_states);
  T5Attention EncDecAttention{nullptr};
  RMSNorm layer_norm{nullptr};

 private:
  double dropout_;
};
TORCH_MODULE(T5LayerCrossAttention);

class T5LayerFFImpl : public torch::nn::Module {
 public:
  T5LayerFFImpl(const T5Options& options, std::shared_ptr<FeedForwardImpl> ffn);
  torch::Tensor forward(const torch::Tensor& x);
  std::shared_ptr<FeedForwardImpl> DenseReluDense;
  RMSNorm layer_norm{nullptr};

 private:
  double dropout_;
};
TORCH_MODULE(T5LayerFF);

// A block: layer.0 self-attention, layer.1 cross-attention (decoder only), then the FFN layer.
class T5BlockImpl : public torch::nn::Module {
 public:
  T5BlockImpl(const T5Options& options, bool is_decoder, bool has_relative_attention_bias,
              std::shared_ptr<FeedForwardImpl> ffn);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& bias,
                        const torch::Tensor& encoder_states);

  torch::nn::ModuleList layer{nullptr};
  // The same modules as layer's, typed.
  T5LayerSelfAttention self_attention{nullptr};
  T5LayerCrossAttention cross_attention{nullptr};  // null in the encoder
  T5LayerFF feed_forward{nullptr};
};
TORCH_MODULE(T5Block);

// One stack (encoder or decoder): blocks over the embedded tokens, then a final norm.
class T5StackImpl : public torch::nn::Module {
 public:
  T5StackImpl(const T5Options& options, bool is_decoder, const std::vector<FfnSite>& sites);
  // `embedded` [B, L, D]; `encoder_states` for the decoder's cross-attention.
  torch::Tensor forward(const torch::Tensor& embedded, const torch::Tensor& encoder_states = {});

  torch::nn::ModuleList block{nullptr};
  RMSNorm final_layer_norm{nullptr};

 private:
  std::vector<T5Block> blocks_;  // block's, typed
  double dropout_;
};
TORCH_MODULE(T5Stack);

class T5Impl : public ModelImpl, public EncoderDecoder, public ExemptFromWeightDecay {
 public:
  explicit T5Impl(T5Options options);
  // The encoder alone: its final hidden states [B, L, D] for token ids [B, L].
  torch::Tensor forward(const torch::Tensor& inputs) override;
  // Logits [B, L_out, vocab] of the decoder reading `decoder_inputs` (targets shifted right,
  // decoder start 0) over the encoding of `inputs`.
  torch::Tensor forward_encoder_decoder(const torch::Tensor& inputs,
                                        const torch::Tensor& decoder_inputs) override;
  std::vector<std::string> exempt_from_weight_decay() const override { return {"shared.weight"}; }

  T5Options options;
  torch::nn::Embedding shared{nullptr};
  T5Stack encoder{nullptr}, decoder{nullptr};
  Linear lm_head{nullptr};
};
TORCH_MODULE(T5);

}  // namespace exfusion
