// A decoder language model with Hugging Face LlamaForCausalLM's names and config.json keys:
// RMS norms (eps rms_norm_eps), rotary position embeddings (rope_theta; Hugging Face's halves
// convention), grouped-query attention (num_key_value_heads), a SwiGLU FFN (gate_proj, up_proj,
// down_proj; no biases) at every layer, an untied or tied lm_head, and Hugging Face's
// initialisation (normal, std initializer_range; norms 1). The model is kind "llama"; its FFNs
// come from the run's `ffn` section, so ExFusion, MoE and DeRS go where the dense FFN was.
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
#include "exfusion/models/decoding.h"
#include "exfusion/models/ffn_config.h"
#include "exfusion/models/model.h"

namespace exfusion {

// The keys are Hugging Face's LlamaConfig's (sequence_length is ours: one training sample's
// tokens), so a config.json reads as a model section.
struct LlamaOptions {
  int64_t vocab_size = 32000;
  int64_t hidden_size = 4096;
  int64_t intermediate_size = 11008;
  int64_t num_hidden_layers = 32;
  int64_t num_attention_heads = 32;
  int64_t num_key_value_heads = 32;
  int64_t head_dim = 0;  // 0: hidden_size / num_attention_heads
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  int64_t max_position_embeddings = 4096;
  bool tie_word_embeddings = false;
  double initializer_range = 0.02;
  int64_t sequence_length = 256;
  FfnConfig ffn;  // not a field of the model section: the run's `ffn` section

  template <class Fields>
  void fields(Fields& f) {
    f("vocab_size", vocab_size, "token ids in [0, vocab_size)",
      config::in_range<int64_t>(2, 1 << 24));
    f("hidden_size", hidden_size, "the width of every layer", config::in_range<int64_t>(1, 65536));
    f("intermediate_size", intermediate_size, "the FFN's hidden width",
      config::in_range<int64_t>(1, 1 << 20));
    f("num_hidden_layers", num_hidden_layers, "decoder layers", config::in_range<int64_t>(1, 1024));
    f("num_attention_heads", num_attention_heads, "query heads",
      config::in_range<int64_t>(1, 1024));
    f("num_key_value_heads", num_key_value_heads,
      "key/value heads (grouped-query attention; divides num_attention_heads)",
      config::in_range<int64_t>(1, 1024));
    f("head_dim", head_dim, "width of each head; 0: hidden_size / num_attention_heads",
      config::in_range<int64_t>(0, 4096));
    f("rms_norm_eps", rms_norm_eps, "epsilon of every RMS norm",
      config::Check<double>{"a positive epsilon below 1", [](double v) { return v > 0 && v < 1; }});
    f("rope_theta", rope_theta, "the rotary embedding's base",
      config::Check<double>{"above 1", [](double v) { return v > 1; }});
    f("max_position_embeddings", max_position_embeddings, "the longest sequence it is made for",
      config::in_range<int64_t>(1, 1 << 24));
    f("tie_word_embeddings", tie_word_embeddings, "lm_head shares embed_tokens' matrix");
    f("initializer_range", initializer_range, "std of the initial weights",
      config::Check<double>{"positive", [](double v) { return v > 0; }});
    f("sequence_length", sequence_length, "tokens per training sample",
      config::in_range<int64_t>(1, 1 << 24));
  }
  // `preset: llama-cpu-10m` (a 10 M model for CPU work, vocabulary 8192) or `llama-2-7b`
  // (Meta's Llama 2 7B shape).
  void apply_preset(const std::string& name, const config::Location& at);
  void validate(const config::Location& at = {"", "model"}) const;
  int64_t head_width() const { return head_dim > 0 ? head_dim : hidden_size / num_attention_heads; }

  // The model-kind interface (models/model.h).
  ModelPtr build(const FfnConfig& ffn) const;
  double forward_flops_per_sample(const FfnConfig& ffn) const;
  void validate_ffn(const FfnConfig& ffn, const config::Location& at) const;
  std::vector<std::vector<int64_t>> input_shapes() const { return {{sequence_length}}; }
  int64_t num_outputs() const { return vocab_size; }
  // model.layers.<i>.mlp, index i.
  std::vector<FfnSite> ffn_sites() const;
  TensorShapes dense_tensor_shapes() const;
  double parameters_outside_ffns() const;
};

// Hugging Face's rotary embedding of positions 0 … length−1: cos and sin [length, head_dim],
// each frequency θ^(−2i/d) twice (the halves convention), computed in float32.
std::pair<torch::Tensor, torch::Tensor> rotary_tables(int64_t length, int64_t head_dim,
                                                      double theta, const torch::Device& device);
// x [B, L, heads, head_dim] rotated: x · cos + rotate_half(x) · sin, rotate_half(x) =
// (−x₂, x₁) for the halves x₁, x₂ of each head.
torch::Tensor apply_rotary(const torch::Tensor& x, const torch::Tensor& cos,
                           const torch::Tensor& sin);

// Incremental decoding's keys (rotated) and values of one layer, [B, capacity, kv_heads,
// head_dim], the first `length` positions (LlamaCache's) filled.
struct LlamaLayerCache {
  torch::Tensor keys, values;
};
struct LlamaCache : DecodingState {
  std::vector<LlamaLayerCache> layers;
  int64_t filled = 0;
  int64_t length() const override { return filled; }
};

// Causal self-attention with q/k/v/o projections (no biases), rotary positions on q and k, and
// key/value heads shared by groups of query heads.
class LlamaAttentionImpl : public torch::nn::Module {
 public:
  explicit LlamaAttentionImpl(const LlamaOptions& options);
  // x [B, L, D] at positions past … past + L − 1 (cos and sin theirs); with a cache, its keys
  // and values go into it there and the queries see every position cached before them.
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
                        LlamaLayerCache* cache = nullptr, int64_t past = 0);
  // An empty cache of this layer for `batch` sequences of up to `capacity` positions.
  LlamaLayerCache empty_cache(int64_t batch, int64_t capacity) const;

  Linear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, o_proj{nullptr};

 private:
  int64_t heads_, kv_heads_, head_dim_;
};
TORCH_MODULE(LlamaAttention);

// Pre-norm residual layer: x + attn(norm(x)), then y + mlp(norm(y)).
class LlamaDecoderLayerImpl : public torch::nn::Module {
 public:
  LlamaDecoderLayerImpl(const LlamaOptions& options, std::shared_ptr<FeedForwardImpl> ffn);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
                        LlamaLayerCache* cache = nullptr, int64_t past = 0);

  LlamaAttention self_attn{nullptr};
  std::shared_ptr<FeedForwardImpl> mlp;
  RMSNorm input_layernorm{nullptr}, post_attention_layernorm{nullptr};
};
TORCH_MODULE(LlamaDecoderLayer);

// `model.`: the embedding, the layers and the final norm (transformers' LlamaModel).
class LlamaBodyImpl : public torch::nn::Module, public ExemptFromWeightDecay {
 public:
  explicit LlamaBodyImpl(const LlamaOptions& options);
  // Token ids [B, L] → hidden [B, L, D]; with a cache, at the positions after its own, which
  // it then holds too.
  torch::Tensor forward(const torch::Tensor& inputs, LlamaCache* cache = nullptr);
  std::unique_ptr<LlamaCache> empty_cache(int64_t batch, int64_t capacity) const;
  std::vector<std::string> exempt_from_weight_decay() const override {
    return {"embed_tokens.weight"};
  }

  torch::nn::Embedding embed_tokens{nullptr};
  torch::nn::ModuleList layers{nullptr};
  RMSNorm norm{nullptr};

 private:
  std::vector<LlamaDecoderLayer> layers_;  // layers', typed
  int64_t head_dim_;
  double theta_;
};
TORCH_MODULE(LlamaBody);

class LlamaImpl : public ModelImpl, public DecodesIncrementally {
 public:
  explicit LlamaImpl(LlamaOptions options);
  // Logits [B, L, vocab] for token ids [B, L], each position seeing itself and the past.
  torch::Tensor forward(const torch::Tensor& inputs) override;
  std::unique_ptr<DecodingState> start_decoding(int64_t batch, int64_t capacity) const override;
  torch::Tensor decode(const torch::Tensor& tokens, DecodingState& state) override;

  LlamaOptions options;
  LlamaBody model{nullptr};
  Linear lm_head{nullptr};  // null when tied to model.embed_tokens
};
TORCH_MODULE(Llama);

}  // namespace exfusion
