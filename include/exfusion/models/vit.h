// Vision Transformer / DeiT with timm's parameter names and layout (SPEC §3), so a dense
// (or fused) checkpoint loads into timm's VisionTransformer unchanged. Which FFN each block
// gets comes from the run's `ffn` section (models/ffn_config.h); the model is kind "vit".
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
#include "exfusion/layers/attention.h"
#include "exfusion/layers/layer_norm.h"
#include "exfusion/layers/linear.h"
#include "exfusion/models/ffn_config.h"
#include "exfusion/models/model.h"

namespace exfusion {

struct VisionTransformerOptions {
  int64_t img_size = 224;
  int64_t in_chans = 3;
  int64_t patch_size = 16;
  int64_t embed_dim = 768;
  int64_t depth = 12;
  int64_t num_heads = 12;
  double mlp_ratio = 4.0;
  int64_t num_classes = 1000;
  // LayerNorm epsilon: timm's ViT's (Hugging Face's ViT uses 1e-12).
  double norm_eps = 1e-6;
  FfnConfig ffn;  // not a field of the model section: the run's `ffn` section

  template <class Fields>
  void fields(Fields& f) {
    f("img_size", img_size, "input height and width in pixels", config::in_range<int64_t>(1, 4096));
    f("in_chans", in_chans, "input channels", config::in_range<int64_t>(1, 64));
    f("patch_size", patch_size, "patch height and width (divides img_size)",
      config::in_range<int64_t>(1, 4096));
    f("embed_dim", embed_dim, "token width D", config::in_range<int64_t>(1, 16384));
    f("depth", depth, "number of blocks", config::in_range<int64_t>(1, 1024));
    f("num_heads", num_heads, "attention heads (divides embed_dim)",
      config::in_range<int64_t>(1, 1024));
    f("mlp_ratio", mlp_ratio, "FFN hidden width / embed_dim",
      config::Check<double>{"a positive ratio up to 64",
                            [](double v) { return v > 0 && v <= 64; }});
    f("num_classes", num_classes, "classes of the head", config::in_range<int64_t>(1, 1000000));
    f("norm_eps", norm_eps, "epsilon of every LayerNorm (timm's ViT: 1e-6, Hugging Face's: 1e-12)",
      config::Check<double>{"a positive epsilon below 1", [](double v) { return v > 0 && v < 1; }});
  }
  // `preset: tiny|small|base` sets embed_dim, depth, num_heads and mlp_ratio (timm's sizes).
  void apply_preset(const std::string& name, const config::Location& at);

  int64_t num_patches() const;
  int64_t hidden_dim() const;
  // Throws InputError naming the first invalid field under `at` (default "model").
  void validate(const config::Location& at = {"", "model"}) const;

  // The model-kind interface (models/model.h).
  ModelPtr build(const FfnConfig& ffn) const;
  double forward_flops_per_sample(const FfnConfig& ffn) const;
  void validate_ffn(const FfnConfig& ffn, const config::Location& at) const;
  std::vector<std::vector<int64_t>> input_shapes() const {
    return {{in_chans, img_size, img_size}};
  }
  int64_t num_outputs() const { return num_classes; }
  // {"architecture": "vit", "timm_kwargs": {...}, "norm_eps": ...}: timm's
  // VisionTransformer(**kwargs), whose LayerNorms take eps 1e-6; another norm_eps needs
  // norm_layer=partial(LayerNorm, eps=norm_eps) besides the kwargs.
  // blocks.<i>.mlp, index i: fc1/fc2 with GELU over every token (patches and the class token).
  std::vector<FfnSite> ffn_sites() const;
  // Our dense ViT's tensors (timm's names) with their shapes, in module_tensors order.
  TensorShapes dense_tensor_shapes() const;
  // Patch embedding, class token, position embedding, each block's norms and attention, the
  // final norm and the head; a double, since a forged config's product can overflow int64.
  double parameters_outside_ffns() const;
};

// timm's sizes: tiny 192/12/3, small 384/12/6, base 768/12/12 (patch 16, 224 px).
VisionTransformerOptions vit_preset(const std::string& name);

class PatchEmbedImpl : public torch::nn::Module, public ExemptFromWeightDecay {
 public:
  PatchEmbedImpl(int64_t in_chans, int64_t embed_dim, int64_t patch_size);
  // LibTorch's Conv2d cannot declare its bias.
  std::vector<std::string> exempt_from_weight_decay() const override { return {"proj.bias"}; }
  torch::Tensor forward(const torch::Tensor& images);  // [B, C, H, W] -> [B, L, D]
  torch::nn::Conv2d proj{nullptr};
};
TORCH_MODULE(PatchEmbed);

class BlockImpl : public torch::nn::Module {
 public:
  BlockImpl(int64_t dim, int64_t num_heads, double norm_eps, std::shared_ptr<FeedForwardImpl> ffn);
  torch::Tensor forward(const torch::Tensor& x);

  LayerNorm norm1{nullptr}, norm2{nullptr};
  Attention attn{nullptr};
  std::shared_ptr<FeedForwardImpl> mlp;
};
TORCH_MODULE(Block);

class VisionTransformerImpl : public ModelImpl, public ExemptFromWeightDecay {
 public:
  explicit VisionTransformerImpl(VisionTransformerOptions options);
  // As timm: the class token and the position embedding are not shrunk.
  std::vector<std::string> exempt_from_weight_decay() const override {
    return {"cls_token", "pos_embed"};
  }
  torch::Tensor forward(const torch::Tensor& images) override;  // -> logits [B, num_classes]

  Block block(int64_t index) const;

  VisionTransformerOptions options;
  PatchEmbed patch_embed{nullptr};
  torch::Tensor cls_token, pos_embed;
  torch::nn::ModuleList blocks{nullptr};
  LayerNorm norm{nullptr};
  Linear head{nullptr};
};
TORCH_MODULE(VisionTransformer);

// Forward FLOPs (multiply-adds × 2) of one image through the architecture.
double forward_flops_per_image(const VisionTransformerOptions& options);

}  // namespace exfusion
