// Vision Transformer / DeiT with timm's parameter names and layout (SPEC §3), so a dense
// (or fused) checkpoint loads into timm's VisionTransformer unchanged. Which FFN each
// block gets (dense or ExFusion) is chosen by FfnOptions.
#pragma once
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <memory>
#include <string>
#include <vector>

#include "exfusion/layers/attention.h"
#include "exfusion/layers/ffn.h"
#include "exfusion/layers/moe.h"

namespace exfusion {

enum class FfnKind { kDense, kExFusion, kMoE };
std::string to_string(FfnKind kind);  // "dense", "exfusion", "moe"

struct FfnOptions {
  FfnKind kind = FfnKind::kDense;
  ExFusionOptions exfusion;
  MoeOptions moe;
  std::vector<int64_t> layers;  // blocks whose FFN is replaced; empty means all
  bool replaces(int64_t block) const;
};

struct VisionTransformerOptions {
  int64_t img_size = 224;
  int64_t in_chans = 3;
  int64_t patch_size = 16;
  int64_t embed_dim = 768;
  int64_t depth = 12;
  int64_t num_heads = 12;
  double mlp_ratio = 4.0;
  int64_t num_classes = 1000;
  FfnOptions ffn;

  int64_t num_patches() const;
  int64_t hidden_dim() const;
  // Throws InputError naming the first invalid field.
  void validate() const;
};

// timm's sizes: tiny 192/12/3, small 384/12/6, base 768/12/12 (patch 16, 224 px).
VisionTransformerOptions vit_preset(const std::string& name);

class PatchEmbedImpl : public torch::nn::Module {
 public:
  PatchEmbedImpl(int64_t in_chans, int64_t embed_dim, int64_t patch_size);
  torch::Tensor forward(const torch::Tensor& images);  // [B, C, H, W] -> [B, L, D]
  torch::nn::Conv2d proj{nullptr};
};
TORCH_MODULE(PatchEmbed);

class BlockImpl : public torch::nn::Module {
 public:
  BlockImpl(int64_t dim, int64_t num_heads, std::shared_ptr<FeedForwardImpl> ffn);
  torch::Tensor forward(const torch::Tensor& x);
  void replace_mlp(std::shared_ptr<FeedForwardImpl> ffn);

  torch::nn::LayerNorm norm1{nullptr}, norm2{nullptr};
  Attention attn{nullptr};
  std::shared_ptr<FeedForwardImpl> mlp;
};
TORCH_MODULE(Block);

class VisionTransformerImpl : public torch::nn::Module {
 public:
  explicit VisionTransformerImpl(VisionTransformerOptions options);
  torch::Tensor forward(const torch::Tensor& images);  // -> logits [B, num_classes]

  Block block(int64_t index) const;

  VisionTransformerOptions options;
  PatchEmbed patch_embed{nullptr};
  torch::Tensor cls_token, pos_embed;
  torch::nn::ModuleList blocks{nullptr};
  torch::nn::LayerNorm norm{nullptr};
  torch::nn::Linear head{nullptr};
};
TORCH_MODULE(VisionTransformer);

// Forward FLOPs (multiply-adds × 2) of one image through the dense architecture.
double forward_flops_per_image(const VisionTransformerOptions& options);

int64_t count_parameters(const torch::nn::Module& module);

}  // namespace exfusion
