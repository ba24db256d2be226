// PVT v1, the paper's PVT-T/S/M/L (its Table II), with the names of the authors' classification
// code (whai362/PVT, classification/pvt.py; docs/design/swin-pvt-reference.md §3): per-stage
// patch embeddings and position embeddings, spatial-reduction attention (a strided convolution
// and a norm shorten the keys and values where the stage's ratio is above 1), the class token in
// the last stage, plain GELU FFNs. Every block's FFN is a site (`ffn.layers` counts the blocks
// of all stages in order); the model is kind "pvt_v1".
#pragma once
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <memory>
#include <string>
#include <vector>

#include "exfusion/config/fields.h"
#include "exfusion/layers/capabilities.h"
#include "exfusion/layers/layer_norm.h"
#include "exfusion/layers/linear.h"
#include "exfusion/models/ffn_config.h"
#include "exfusion/models/model.h"

namespace exfusion {

struct PvtOptions {
  int64_t img_size = 224;
  int64_t in_chans = 3;
  int64_t patch_size = 4;  // stage 0's patches; every later stage merges 2 × 2
  std::vector<int64_t> embed_dims = {64, 128, 320, 512};
  std::vector<int64_t> num_heads = {1, 2, 5, 8};
  std::vector<double> mlp_ratios = {8, 8, 4, 4};
  std::vector<int64_t> depths = {2, 2, 2, 2};
  std::vector<int64_t> sr_ratios = {8, 4, 2, 1};
  int64_t num_classes = 1000;
  FfnConfig ffn;  // the run's `ffn` section

  template <class Fields>
  void fields(Fields& f) {
    f("img_size", img_size, "input height and width in pixels", config::in_range<int64_t>(1, 4096));
    f("in_chans", in_chans, "input channels", config::in_range<int64_t>(1, 64));
    f("patch_size", patch_size, "stage 0's patch height and width (later stages merge 2 × 2)",
      config::in_range<int64_t>(1, 4096));
    f("embed_dims", embed_dims, "width per stage, e.g. [64, 128, 320, 512]");
    f("num_heads", num_heads, "attention heads per stage (each divides its width)");
    f("mlp_ratios", mlp_ratios, "FFN hidden width / the stage's width, per stage");
    f("depths", depths, "blocks per stage");
    f("sr_ratios", sr_ratios,
      "spatial reduction of the keys and values per stage (1: none; the last stage's must be 1, "
      "as its class token has no place in the grid)");
    f("num_classes", num_classes, "classes of the head", config::in_range<int64_t>(1, 1000000));
  }
  // `preset: pvt_tiny|pvt_small|pvt_medium|pvt_large`: the authors' sizes at 224 px.
  void apply_preset(const std::string& name, const config::Location& at);
  void validate(const config::Location& at = {"", "model"}) const;

  int64_t stages() const { return static_cast<int64_t>(depths.size()); }
  int64_t stage_resolution(int64_t stage) const { return img_size / patch_size >> stage; }
  int64_t stage_hidden(int64_t stage) const;
  // Tokens per sample in a stage: its grid, and the class token in the last.
  int64_t stage_tokens(int64_t stage) const;

  // The model-kind interface (models/model.h).
  ModelPtr build(const FfnConfig& ffn) const;
  // Multiply-adds × 2 of the convolutions, the linears and the attention products (the
  // authors' mmcv count with their attention term: no norms, softmax or GELU).
  double forward_flops_per_sample(const FfnConfig& ffn) const;
  void validate_ffn(const FfnConfig& ffn, const config::Location& at) const;
  std::vector<std::vector<int64_t>> input_shapes() const {
    return {{in_chans, img_size, img_size}};
  }
  int64_t num_outputs() const { return num_classes; }
  // block<k>.<j>.mlp (k from 1, as the authors name them), indexed over all stages in order.
  std::vector<FfnSite> ffn_sites() const;
  TensorShapes dense_tensor_shapes() const;
  double parameters_outside_ffns() const;
};

class PvtPatchEmbedImpl : public torch::nn::Module, public ExemptFromWeightDecay {
 public:
  PvtPatchEmbedImpl(int64_t in_chans, int64_t dim, int64_t patch);
  std::vector<std::string> exempt_from_weight_decay() const override { return {"proj.bias"}; }
  torch::Tensor forward(const torch::Tensor& images);  // [B, C, H, W] -> [B, H'·W', D]
  torch::nn::Conv2d proj{nullptr};
  LayerNorm norm{nullptr};
};
TORCH_MODULE(PvtPatchEmbed);

// Spatial-reduction attention: queries from every token, keys and values from the grid shrunk
// by a strided convolution (`sr`) and a norm where the ratio is above 1.
class SpatialReductionAttentionImpl : public torch::nn::Module, public ExemptFromWeightDecay {
 public:
  SpatialReductionAttentionImpl(int64_t dim, int64_t heads, int64_t sr_ratio);
  std::vector<std::string> exempt_from_weight_decay() const override;
  torch::Tensor forward(const torch::Tensor& x, int64_t height, int64_t width);

  Linear q{nullptr}, kv{nullptr}, proj{nullptr};
  torch::nn::Conv2d sr{nullptr};  // sr_ratio > 1 only
  LayerNorm norm{nullptr};        // sr_ratio > 1 only

 private:
  int64_t heads_, sr_ratio_;
};
TORCH_MODULE(SpatialReductionAttention);

class PvtBlockImpl : public torch::nn::Module {
 public:
  PvtBlockImpl(int64_t dim, int64_t heads, int64_t sr_ratio, std::shared_ptr<FeedForwardImpl> ffn);
  torch::Tensor forward(const torch::Tensor& x, int64_t height, int64_t width);

  LayerNorm norm1{nullptr}, norm2{nullptr};
  SpatialReductionAttention attn{nullptr};
  std::shared_ptr<FeedForwardImpl> mlp;
};
TORCH_MODULE(PvtBlock);

class PvtImpl : public ModelImpl, public ExemptFromWeightDecay {
 public:
  explicit PvtImpl(PvtOptions options);
  std::vector<std::string> exempt_from_weight_decay() const override;
  torch::Tensor forward(const torch::Tensor& images) override;  // -> logits [B, num_classes]

  PvtOptions options;
  std::vector<torch::Tensor> pos_embeds;  // pos_embed1, ... (the last has the class token's)
  torch::Tensor cls_token;
  std::vector<PvtPatchEmbed> patch_embeds;     // patch_embed1, ...
  std::vector<torch::nn::ModuleList> stages_;  // block1, ...
  LayerNorm norm{nullptr};
  Linear head{nullptr};
};

}  // namespace exfusion
