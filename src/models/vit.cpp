// Vision Transformer with timm's layout (see vit.h).
#include "exfusion/models/vit.h"

#include <algorithm>

#include "exfusion/layers/layer_norm.h"
#include "exfusion/layers/linear.h"
#include "exfusion/util/error.h"
#include "exfusion/util/init.h"

namespace exfusion {
namespace {

// The options' norm_eps: timm's 1e-6 by default, not PyTorch's 1e-5.
LayerNorm make_layer_norm(int64_t dim, double eps) {
  return LayerNorm(LayerNormOptions(dim).eps(eps));
}

}  // namespace

int64_t VisionTransformerOptions::num_patches() const {
  return (img_size / patch_size) * (img_size / patch_size);
}

int64_t VisionTransformerOptions::hidden_dim() const {
  return static_cast<int64_t>(static_cast<double>(embed_dim) * mlp_ratio);
}

void VisionTransformerOptions::validate(const config::Location& at) const {
  const auto require = [&](bool ok, const char* key, const nlohmann::json& value,
                           const std::string& expected) {
    if (!ok) config::fail(at, key, value, expected);
  };
  require(img_size > 0, "img_size", img_size, "a positive size");
  require(in_chans > 0, "in_chans", in_chans, "at least 1");
  require(patch_size > 0 && img_size % patch_size == 0, "patch_size", patch_size,
          "a positive divisor of " + at.key_path("img_size") + " = " + std::to_string(img_size));
  require(embed_dim > 0, "embed_dim", embed_dim, "a positive size");
  require(depth > 0, "depth", depth, "at least 1");
  require(num_heads > 0 && embed_dim % num_heads == 0, "num_heads", num_heads,
          "a positive divisor of " + at.key_path("embed_dim") + " = " + std::to_string(embed_dim));
  require(hidden_dim() > 0, "mlp_ratio", mlp_ratio,
          "a ratio that gives a positive hidden width with embed_dim");
  require(num_classes > 0, "num_classes", num_classes, "at least 1");
  require(norm_eps > 0 && norm_eps < 1, "norm_eps", norm_eps, "a positive epsilon below 1");
}

void VisionTransformerOptions::validate_ffn(const FfnConfig& config,
                                            const config::Location& at) const {
  config.validate_layers(depth, at);
}

TensorShapes VisionTransformerOptions::dense_tensor_shapes() const {
  const auto& o = *this;
  const int64_t d = o.embed_dim, h = o.hidden_dim(), k = o.num_classes;
  TensorShapes shapes = {{"cls_token", {1, 1, d}},
                         {"pos_embed", {1, o.num_patches() + 1, d}},
                         {"patch_embed.proj.weight", {d, o.in_chans, o.patch_size, o.patch_size}},
                         {"patch_embed.proj.bias", {d}}};
  const TensorShapes block_shapes = {
      {"norm1.weight", {d}},      {"norm1.bias", {d}},          {"attn.qkv.weight", {3 * d, d}},
      {"attn.qkv.bias", {3 * d}}, {"attn.proj.weight", {d, d}}, {"attn.proj.bias", {d}},
      {"norm2.weight", {d}},      {"norm2.bias", {d}},          {"mlp.fc1.weight", {h, d}},
      {"mlp.fc1.bias", {h}},      {"mlp.fc2.weight", {d, h}},   {"mlp.fc2.bias", {d}}};
  for (int64_t i = 0; i < o.depth; ++i) {
    for (const auto& [name, shape] : block_shapes) {
      shapes.emplace_back("blocks." + std::to_string(i) + "." + name, shape);
    }
  }
  shapes.push_back({"norm.weight", {d}});
  shapes.push_back({"norm.bias", {d}});
  shapes.push_back({"head.weight", {k, d}});
  shapes.push_back({"head.bias", {k}});
  return shapes;
}

std::vector<FfnSite> VisionTransformerOptions::ffn_sites() const {
  std::vector<FfnSite> sites;
  for (int64_t i = 0; i < depth; ++i) {
    sites.push_back({"blocks." + std::to_string(i) + ".mlp", i, embed_dim, hidden_dim(),
                     static_cast<double>(num_patches() + 1), FfnForm::plain()});
  }
  return sites;
}

void VisionTransformerOptions::apply_preset(const std::string& name, const config::Location& at) {
  if (name != "tiny" && name != "small" && name != "base") {
    config::fail(at, "preset", name, "tiny, small or base");
  }
  const auto sized = vit_preset(name);
  embed_dim = sized.embed_dim;
  depth = sized.depth;
  num_heads = sized.num_heads;
  mlp_ratio = sized.mlp_ratio;
}

ModelPtr VisionTransformerOptions::build(const FfnConfig& config) const {
  auto options = *this;
  options.ffn = config;
  return std::make_shared<VisionTransformerImpl>(std::move(options));
}

double VisionTransformerOptions::forward_flops_per_sample(const FfnConfig& config) const {
  auto options = *this;
  options.ffn = config;
  return forward_flops_per_image(options);
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
    throw InputError("model.preset = \"" + name + "\": expected tiny, small or base");
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

BlockImpl::BlockImpl(int64_t dim, int64_t num_heads, double norm_eps,
                     std::shared_ptr<FeedForwardImpl> ffn) {
  norm1 = register_module("norm1", make_layer_norm(dim, norm_eps));
  attn = register_module("attn", Attention(dim, num_heads));
  norm2 = register_module("norm2", make_layer_norm(dim, norm_eps));
  mlp = register_module("mlp", std::move(ffn));
}

torch::Tensor BlockImpl::forward(const torch::Tensor& x) {
  auto y = x + attn->forward(norm1->forward(x));
  return y + mlp->forward(norm2->forward(y));
}

VisionTransformerImpl::VisionTransformerImpl(VisionTransformerOptions options_)
    : options(std::move(options_)) {
  options.validate();
  options.validate_ffn(options.ffn, {"", "ffn"});
  const auto dim = options.embed_dim;
  patch_embed =
      register_module("patch_embed", PatchEmbed(options.in_chans, dim, options.patch_size));
  cls_token = register_parameter("cls_token", torch::zeros({1, 1, dim}));
  pos_embed = register_parameter("pos_embed", torch::zeros({1, options.num_patches() + 1, dim}));
  blocks = register_module("blocks", torch::nn::ModuleList());
  for (const auto& site : options.ffn_sites()) {
    blocks->push_back(Block(dim, options.num_heads, options.norm_eps, options.ffn.build(site)));
  }
  norm = register_module("norm", make_layer_norm(dim, options.norm_eps));
  head = register_module("head", Linear(dim, options.num_classes));
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
  return head->forward(norm->forward(x.select(1, 0)));
}

Block VisionTransformerImpl::block(int64_t index) const {
  return Block(blocks->ptr<BlockImpl>(index));
}

double VisionTransformerOptions::parameters_outside_ffns() const {
  const double dim = static_cast<double>(embed_dim);
  const double patch_embed =
      dim * static_cast<double>(in_chans * patch_size) * static_cast<double>(patch_size) + dim;
  const double tokens = static_cast<double>(num_patches() + 1);
  const double block = 2 * 2 * dim + (3 * dim * dim + 3 * dim) + (dim * dim + dim);
  const double classes = static_cast<double>(num_classes);
  return patch_embed + dim + tokens * dim + static_cast<double>(depth) * block + 2 * dim +
         dim * classes + classes;
}

double forward_flops_per_image(const VisionTransformerOptions& options) {
  const double tokens = static_cast<double>(options.num_patches() + 1);
  const double dim = static_cast<double>(options.embed_dim);
  const double patch_area = static_cast<double>(options.patch_size * options.patch_size);
  const double patch_macs =
      static_cast<double>(options.num_patches()) * dim * options.in_chans * patch_area;
  const double attention_macs = tokens * 4.0 * dim * dim + 2.0 * tokens * tokens * dim;
  double blocks_macs = 0.0;
  for (const auto& site : options.ffn_sites()) {
    blocks_macs +=
        attention_macs + site.tokens_per_sample * options.ffn.forward_macs_per_token(site);
  }
  const double head_macs = dim * static_cast<double>(options.num_classes);
  return 2.0 * (patch_macs + blocks_macs + head_macs);
}

}  // namespace exfusion
