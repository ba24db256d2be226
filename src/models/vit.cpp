// Vision Transformer with timm's layout (see vit.h).
#include "exfusion/models/vit.h"

#include <algorithm>

#include "exfusion/layers/layer_norm.h"
#include "exfusion/layers/linear.h"
#include "exfusion/util/error.h"
#include "exfusion/util/init.h"

namespace exfusion {
namespace {

constexpr double kLayerNormEps = 1e-6;  // timm's ViT, not PyTorch's 1e-5

torch::nn::LayerNorm make_layer_norm(int64_t dim) {
  return torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim}).eps(kLayerNormEps));
}

void require(bool ok, const std::string& field, int64_t value, const std::string& expected) {
  if (!ok) throw InputError(field + " = " + std::to_string(value) + ": expected " + expected);
}

}  // namespace

std::string to_string(FfnKind kind) {
  switch (kind) {
    case FfnKind::kDense:
      return "dense";
    case FfnKind::kExFusion:
      return "exfusion";
    case FfnKind::kMoE:
      return "moe";
  }
  return "dense";
}

bool FfnOptions::replaces(int64_t block) const {
  return kind != FfnKind::kDense &&
         (layers.empty() || std::find(layers.begin(), layers.end(), block) != layers.end());
}

int64_t VisionTransformerOptions::num_patches() const {
  return (img_size / patch_size) * (img_size / patch_size);
}

int64_t VisionTransformerOptions::hidden_dim() const {
  return static_cast<int64_t>(static_cast<double>(embed_dim) * mlp_ratio);
}

void VisionTransformerOptions::validate() const {
  require(img_size > 0, "model.img_size", img_size, "a positive size");
  require(in_chans > 0, "model.in_chans", in_chans, "at least 1");
  require(patch_size > 0 && img_size % patch_size == 0, "model.patch_size", patch_size,
          "a positive divisor of model.img_size = " + std::to_string(img_size));
  require(embed_dim > 0, "model.embed_dim", embed_dim, "a positive size");
  require(depth > 0, "model.depth", depth, "at least 1");
  require(num_heads > 0 && embed_dim % num_heads == 0, "model.num_heads", num_heads,
          "a positive divisor of model.embed_dim = " + std::to_string(embed_dim));
  require(hidden_dim() > 0, "model.mlp_ratio × embed_dim", hidden_dim(), "a positive size");
  require(num_classes > 0, "model.num_classes", num_classes, "at least 1");
  if (ffn.kind == FfnKind::kExFusion) ffn.exfusion.validate();
  if (ffn.kind == FfnKind::kMoE) ffn.moe.validate();
  for (const auto layer : ffn.layers) {
    require(layer >= 0 && layer < depth, "ffn.layers", layer,
            "block indices in [0, " + std::to_string(depth) + ")");
  }
}

VisionTransformerOptions vit_preset(const std::string& name) {
  VisionTransformerOptions options;
  if (name == "tiny") {
    options.embed_dim = 192;
    options.num_heads = 3;
  } else if (name == "small") {
    options.embed_dim = 384;
    options.num_heads = 6;
  } else if (name == "base") {
    options.embed_dim = 768;
    options.num_heads = 12;
  } else {
    throw InputError("model.preset '" + name + "': expected tiny, small or base");
  }
  return options;
}

PatchEmbedImpl::PatchEmbedImpl(int64_t in_chans, int64_t embed_dim, int64_t patch_size) {
  proj = register_module(
      "proj", torch::nn::Conv2d(
                  torch::nn::Conv2dOptions(in_chans, embed_dim, patch_size).stride(patch_size)));
}

torch::Tensor PatchEmbedImpl::forward(const torch::Tensor& images) {
  return proj->forward(images).flatten(2).transpose(1, 2);
}

BlockImpl::BlockImpl(int64_t dim, int64_t num_heads, std::shared_ptr<FeedForwardImpl> ffn) {
  norm1 = register_module("norm1", make_layer_norm(dim));
  attn = register_module("attn", Attention(dim, num_heads));
  norm2 = register_module("norm2", make_layer_norm(dim));
  mlp = register_module("mlp", std::move(ffn));
}

torch::Tensor BlockImpl::forward(const torch::Tensor& x) {
  auto y = x + attn->forward(layer_norm(x, norm1));
  return y + mlp->forward(layer_norm(y, norm2));
}

void BlockImpl::replace_mlp(std::shared_ptr<FeedForwardImpl> ffn) {
  mlp = replace_module("mlp", std::move(ffn));
}

VisionTransformerImpl::VisionTransformerImpl(VisionTransformerOptions options_)
    : options(std::move(options_)) {
  options.validate();
  const auto dim = options.embed_dim;
  patch_embed =
      register_module("patch_embed", PatchEmbed(options.in_chans, dim, options.patch_size));
  cls_token = register_parameter("cls_token", torch::zeros({1, 1, dim}));
  pos_embed = register_parameter("pos_embed", torch::zeros({1, options.num_patches() + 1, dim}));
  blocks = register_module("blocks", torch::nn::ModuleList());
  for (int64_t i = 0; i < options.depth; ++i) {
    std::shared_ptr<FeedForwardImpl> ffn;
    if (options.ffn.replaces(i) && options.ffn.kind == FfnKind::kMoE) {
      ffn = std::make_shared<MoeMlpImpl>(dim, options.hidden_dim(), options.ffn.moe);
    } else if (options.ffn.replaces(i)) {
      ffn = std::make_shared<ExFusionMlpImpl>(dim, options.hidden_dim(), options.ffn.exfusion);
    } else {
      ffn = std::make_shared<MlpImpl>(dim, options.hidden_dim());
    }
    blocks->push_back(Block(dim, options.num_heads, ffn));
  }
  norm = register_module("norm", make_layer_norm(dim));
  head = register_module("head", torch::nn::Linear(dim, options.num_classes));
  torch::NoGradGuard no_grad;
  trunc_normal_(pos_embed, 0.02);
  cls_token.normal_(0.0, 1e-6);
  init_vit_linear(head);
}

torch::Tensor VisionTransformerImpl::forward(const torch::Tensor& images) {
  auto x = patch_embed->forward(images);
  x = torch::cat({cls_token.expand({x.size(0), -1, -1}).to(x.scalar_type()), x}, 1) + pos_embed;
  for (const auto& block : *blocks) x = block->as<BlockImpl>()->forward(x);
  // LayerNorm is per token, so normalising the class token alone gives timm's output.
  return linear(layer_norm(x.select(1, 0), norm), head);
}

Block VisionTransformerImpl::block(int64_t index) const {
  return Block(blocks->ptr<BlockImpl>(index));
}

double forward_flops_per_image(const VisionTransformerOptions& options) {
  const double tokens = static_cast<double>(options.num_patches() + 1);
  const double dim = static_cast<double>(options.embed_dim);
  const double hidden = static_cast<double>(options.hidden_dim());
  const double patch_area = static_cast<double>(options.patch_size * options.patch_size);
  const double patch_macs =
      static_cast<double>(options.num_patches()) * dim * options.in_chans * patch_area;
  const double attention_macs = tokens * 4.0 * dim * dim + 2.0 * tokens * tokens * dim;
  const double ffn_macs = tokens * 2.0 * dim * hidden;
  double blocks_macs = 0.0;
  for (int64_t block = 0; block < options.depth; ++block) {
    blocks_macs += attention_macs + ffn_macs;
    if (options.ffn.kind == FfnKind::kMoE && options.ffn.replaces(block)) {
      // Each token runs top_k experts, and the router scores all N.
      const auto& moe = options.ffn.moe;
      blocks_macs += ffn_macs * static_cast<double>(moe.top_k() - 1) +
                     tokens * dim * static_cast<double>(moe.num_experts());
    }
  }
  const double head_macs = dim * static_cast<double>(options.num_classes);
  return 2.0 * (patch_macs + blocks_macs + head_macs);
}

int64_t count_parameters(const torch::nn::Module& module) {
  int64_t total = 0;
  for (const auto& p : module.parameters()) total += p.numel();
  return total;
}

}  // namespace exfusion
