// PVT v1 with the authors' layout (see pvt.h; the reference: docs/design/
// swin-pvt-reference.md §3).
#include "exfusion/models/pvt.h"

#include <ATen/ATen.h>

#include "exfusion/layers/attention.h"
#include "exfusion/util/error.h"
#include "exfusion/util/init.h"

namespace exfusion {
namespace {

// The authors' norms: 1e-6 in the blocks and at the end, PyTorch's 1e-5 in the patch
// embeddings and the reduction.
constexpr double kPvtBlockEps = 1e-6;
constexpr double kPvtEmbedEps = 1e-5;

LayerNorm pvt_norm(int64_t dim, double eps) { return LayerNorm(LayerNormOptions(dim).eps(eps)); }

// The authors' init: linears truncated normal (std .02) with zero biases.
Linear pvt_linear(int64_t in, int64_t out) {
  Linear linear(LinearOptions(in, out));
  const torch::NoGradGuard no_grad;
  trunc_normal_(linear->weight, 0.02);
  linear->bias.zero_();
  return linear;
}

std::string stage_name(const char* prefix, int64_t stage) {
  return prefix + std::to_string(stage + 1);
}

}  // namespace

void PvtOptions::apply_preset(const std::string& name, const config::Location& at) {
  img_size = 224, patch_size = 4;
  embed_dims = {64, 128, 320, 512}, num_heads = {1, 2, 5, 8}, mlp_ratios = {8, 8, 4, 4};
  sr_ratios = {8, 4, 2, 1};
  if (name == "pvt_tiny") {
    depths = {2, 2, 2, 2};
  } else if (name == "pvt_small") {
    depths = {3, 4, 6, 3};
  } else if (name == "pvt_medium") {
    depths = {3, 4, 18, 3};
  } else if (name == "pvt_large") {
    depths = {3, 8, 27, 3};
  } else {
    config::fail(at, "preset", name, "pvt_tiny, pvt_small, pvt_medium or pvt_large");
  }
}

int64_t PvtOptions::stage_hidden(int64_t stage) const {
  const auto i = static_cast<size_t>(stage);
  return static_cast<int64_t>(static_cast<double>(embed_dims[i]) * mlp_ratios[i]);
}

int64_t PvtOptions::stage_tokens(int64_t stage) const {
  const auto grid = stage_resolution(stage);
  return grid * grid + (stage == stages() - 1 ? 1 : 0);
}

void PvtOptions::validate(const config::Location& at) const {
  const auto require = [&](bool ok, const char* key, const nlohmann::json& value,
                           const std::string& expected) {
    if (!ok) config::fail(at, key, value, expected);
  };
  require(patch_size > 0 && img_size % patch_size == 0, "patch_size", patch_size,
          "a positive divisor of " + at.key_path("img_size") + " = " + std::to_string(img_size));
  require(!depths.empty() && depths.size() <= 8, "depths", depths, "1 to 8 stages");
  const auto per_stage = "one value per stage (" + std::to_string(depths.size()) + ", as " +
                         at.key_path("depths") + ")";
  require(embed_dims.size() == depths.size(), "embed_dims", embed_dims, per_stage);
  require(num_heads.size() == depths.size(), "num_heads", num_heads, per_stage);
  require(mlp_ratios.size() == depths.size(), "mlp_ratios", mlp_ratios, per_stage);
  require(sr_ratios.size() == depths.size(), "sr_ratios", sr_ratios, per_stage);
  for (int64_t i = 0; i < stages(); ++i) {
    const auto s = static_cast<size_t>(i);
    require(depths[s] > 0, "depths", depths, "at least 1 block a stage");
    require(embed_dims[s] > 0, "embed_dims", embed_dims, "positive widths");
    require(num_heads[s] > 0 && embed_dims[s] % num_heads[s] == 0, "num_heads", num_heads,
            "counts that divide each stage's width (stage " + std::to_string(i) + ": " +
                std::to_string(embed_dims[s]) + ")");
    require(mlp_ratios[s] > 0 && mlp_ratios[s] <= 64 && stage_hidden(i) > 0, "mlp_ratios",
            mlp_ratios, "positive ratios up to 64 that give a positive hidden width");
    const int64_t grid = (img_size / patch_size) >> i;
    require(i == 0 || ((img_size / patch_size) >> (i - 1)) % 2 == 0, "img_size", img_size,
            "a size whose patch grid (" + std::to_string(img_size / patch_size) +
                ") halves evenly into each of the " + std::to_string(stages()) + " stages");
    require(sr_ratios[s] > 0 && grid % sr_ratios[s] == 0, "sr_ratios", sr_ratios,
            "ratios that divide each stage's grid (stage " + std::to_string(i) + ": " +
                std::to_string(grid) + " tokens a side)");
  }
  require(sr_ratios.back() == 1, "sr_ratios", sr_ratios,
          "1 in the last stage, whose class token has no place in the reduced grid");
}

void PvtOptions::validate_ffn(const FfnConfig& config, const config::Location& at) const {
  int64_t blocks = 0;
  for (const auto depth : depths) blocks += depth;
  config.validate_layers(blocks, at);
}

std::vector<FfnSite> PvtOptions::ffn_sites() const {
  std::vector<FfnSite> sites;
  for (int64_t i = 0; i < stages(); ++i) {
    for (int64_t j = 0; j < depths[static_cast<size_t>(i)]; ++j) {
      sites.push_back({stage_name("block", i) + "." + std::to_string(j) + ".mlp",
                       static_cast<int64_t>(sites.size()), embed_dims[static_cast<size_t>(i)],
                       stage_hidden(i), static_cast<double>(stage_tokens(i)), FfnForm::plain()});
    }
  }
  return sites;
}

TensorShapes PvtOptions::dense_tensor_shapes() const {
  TensorShapes shapes;
  for (int64_t i = 0; i < stages(); ++i) {
    shapes.push_back(
        {stage_name("pos_embed", i), {1, stage_tokens(i), embed_dims[static_cast<size_t>(i)]}});
  }
  shapes.push_back({"cls_token", {1, 1, embed_dims.back()}});
  for (int64_t i = 0; i < stages(); ++i) {
    const auto s = static_cast<size_t>(i);
    const int64_t d = embed_dims[s], h = stage_hidden(i), r = sr_ratios[s];
    const int64_t in = i == 0 ? in_chans : embed_dims[s - 1];
    const int64_t patch = i == 0 ? patch_size : 2;
    const auto embed = stage_name("patch_embed", i) + ".";
    shapes.push_back({embed + "proj.weight", {d, in, patch, patch}});
    shapes.push_back({embed + "proj.bias", {d}});
    shapes.push_back({embed + "norm.weight", {d}});
    shapes.push_back({embed + "norm.bias", {d}});
    for (int64_t j = 0; j < depths[s]; ++j) {
      const auto block = stage_name("block", i) + "." + std::to_string(j) + ".";
      TensorShapes block_shapes = {{"norm1.weight", {d}},          {"norm1.bias", {d}},
                                   {"attn.q.weight", {d, d}},      {"attn.q.bias", {d}},
                                   {"attn.kv.weight", {2 * d, d}}, {"attn.kv.bias", {2 * d}},
                                   {"attn.proj.weight", {d, d}},   {"attn.proj.bias", {d}}};
      if (r > 1) {
        block_shapes.push_back({"attn.sr.weight", {d, d, r, r}});
        block_shapes.push_back({"attn.sr.bias", {d}});
        block_shapes.push_back({"attn.norm.weight", {d}});
        block_shapes.push_back({"attn.norm.bias", {d}});
      }
      for (const auto& entry : TensorShapes{{"norm2.weight", {d}},
                                            {"norm2.bias", {d}},
                                            {"mlp.fc1.weight", {h, d}},
                                            {"mlp.fc1.bias", {h}},
                                            {"mlp.fc2.weight", {d, h}},
                                            {"mlp.fc2.bias", {d}}}) {
        block_shapes.push_back(entry);
      }
      for (const auto& [name, shape] : block_shapes) shapes.emplace_back(block + name, shape);
    }
  }
  shapes.push_back({"norm.weight", {embed_dims.back()}});
  shapes.push_back({"norm.bias", {embed_dims.back()}});
  shapes.push_back({"head.weight", {num_classes, embed_dims.back()}});
  shapes.push_back({"head.bias", {num_classes}});
  return shapes;
}

double PvtOptions::parameters_outside_ffns() const {
  return values_outside_ffns(dense_tensor_shapes(), ffn_sites());
}

double PvtOptions::forward_flops_per_sample(const FfnConfig& config) const {
  auto options = *this;
  options.ffn = config;
  const auto sites = options.ffn_sites();
  double macs = 0;
  size_t site = 0;
  for (int64_t i = 0; i < stages(); ++i) {
    const auto s = static_cast<size_t>(i);
    const double d = static_cast<double>(embed_dims[s]);
    const double grid = static_cast<double>(stage_resolution(i));
    const double in = static_cast<double>(i == 0 ? in_chans : embed_dims[s - 1]);
    const double patch = static_cast<double>(i == 0 ? patch_size : 2);
    macs += grid * grid * d * in * patch * patch;  // the patch embedding
    const double tokens = static_cast<double>(stage_tokens(i));
    const double r = static_cast<double>(sr_ratios[s]);
    const double reduced = r > 1 ? (grid / r) * (grid / r) : tokens;
    for (int64_t j = 0; j < depths[s]; ++j, ++site) {
      macs += tokens * 2.0 * d * d + reduced * 2.0 * d * d;  // q and proj; kv
      if (r > 1) macs += reduced * d * d * r * r;            // the reduction's convolution
      macs += 2.0 * tokens * reduced * d;                    // q·kᵀ and the weighted sum
      macs += tokens * config.forward_macs_per_token(sites[site]);
    }
  }
  macs += static_cast<double>(embed_dims.back() * num_classes);
  return 2.0 * macs;
}

ModelPtr PvtOptions::build(const FfnConfig& config) const {
  auto options = *this;
  options.ffn = config;
  return std::make_shared<PvtImpl>(std::move(options));
}

PvtPatchEmbedImpl::PvtPatchEmbedImpl(int64_t in_chans, int64_t dim, int64_t patch) {
  proj = register_module(
      "proj", torch::nn::Conv2d(torch::nn::Conv2dOptions(in_chans, dim, patch).stride(patch)));
  norm = register_module("norm", pvt_norm(dim, kPvtEmbedEps));
}

torch::Tensor PvtPatchEmbedImpl::forward(const torch::Tensor& images) {
  return norm->forward(proj->forward(images).flatten(2).transpose(1, 2));
}

SpatialReductionAttentionImpl::SpatialReductionAttentionImpl(int64_t dim, int64_t heads,
                                                             int64_t sr_ratio)
    : heads_(heads), sr_ratio_(sr_ratio) {
  q = register_module("q", pvt_linear(dim, dim));
  kv = register_module("kv", pvt_linear(dim, 2 * dim));
  proj = register_module("proj", pvt_linear(dim, dim));
  if (sr_ratio > 1) {
    sr = register_module(
        "sr", torch::nn::Conv2d(torch::nn::Conv2dOptions(dim, dim, sr_ratio).stride(sr_ratio)));
    norm = register_module("norm", pvt_norm(dim, kPvtEmbedEps));
  }
}

std::vector<std::string> SpatialReductionAttentionImpl::exempt_from_weight_decay() const {
  if (!sr) return {};
  return {"sr.bias"};  // LibTorch's Conv2d cannot declare its bias
}

torch::Tensor SpatialReductionAttentionImpl::forward(const torch::Tensor& x, int64_t height,
                                                     int64_t width) {
  const auto batch = x.size(0), dim = x.size(2);
  const auto head_dim = dim / heads_;
  auto source = x;
  if (sr) {
    const auto grid = x.transpose(1, 2).reshape({batch, dim, height, width});
    source = norm->forward(sr->forward(grid).flatten(2).transpose(1, 2));
  }
  const auto packed = kv->forward(source);  // [B, M, 2D]: the keys' rows, then the values'
  return proj->forward(multi_head_attention({q->forward(x), 0, packed, 0, dim},
                                            AttentionOptions::standard(heads_, head_dim),
                                            is_training()));
}

PvtBlockImpl::PvtBlockImpl(int64_t dim, int64_t heads, int64_t sr_ratio,
                           std::shared_ptr<FeedForwardImpl> ffn) {
  norm1 = register_module("norm1", pvt_norm(dim, kPvtBlockEps));
  attn = register_module("attn", SpatialReductionAttention(dim, heads, sr_ratio));
  norm2 = register_module("norm2", pvt_norm(dim, kPvtBlockEps));
  mlp = register_module("mlp", std::move(ffn));
}

torch::Tensor PvtBlockImpl::forward(const torch::Tensor& x, int64_t height, int64_t width) {
  const auto y = x + attn->forward(norm1->forward(x), height, width);
  return y + mlp->forward(norm2->forward(y));
}

PvtImpl::PvtImpl(PvtOptions options_) : options(std::move(options_)) {
  options.validate();
  options.validate_ffn(options.ffn, {"", "ffn"});
  // The authors' order: the stages' position embeddings and the class token first.
  for (int64_t i = 0; i < options.stages(); ++i) {
    pos_embeds.push_back(register_parameter(
        stage_name("pos_embed", i),
        torch::zeros({1, options.stage_tokens(i), options.embed_dims[static_cast<size_t>(i)]})));
  }
  cls_token = register_parameter("cls_token", torch::zeros({1, 1, options.embed_dims.back()}));
  const auto sites = options.ffn_sites();
  size_t site = 0;
  for (int64_t i = 0; i < options.stages(); ++i) {
    const auto s = static_cast<size_t>(i);
    const auto dim = options.embed_dims[s];
    patch_embeds.push_back(
        register_module(stage_name("patch_embed", i),
                        PvtPatchEmbed(i == 0 ? options.in_chans : options.embed_dims[s - 1], dim,
                                      i == 0 ? options.patch_size : 2)));
    auto blocks = register_module(stage_name("block", i), torch::nn::ModuleList());
    for (int64_t j = 0; j < options.depths[s]; ++j) {
      blocks->push_back(PvtBlock(dim, options.num_heads[s], options.sr_ratios[s],
                                 options.ffn.build(sites[site++])));
    }
    stages_.push_back(blocks);
  }
  norm = register_module("norm", pvt_norm(options.embed_dims.back(), kPvtBlockEps));
  head = register_module("head", pvt_linear(options.embed_dims.back(), options.num_classes));
  const torch::NoGradGuard no_grad;
  for (auto& embed : pos_embeds) trunc_normal_(embed, 0.02);
  trunc_normal_(cls_token, 0.02);
}

std::vector<std::string> PvtImpl::exempt_from_weight_decay() const {
  // As the authors' no_weight_decay: the position embeddings and the class token.
  std::vector<std::string> names{"cls_token"};
  for (int64_t i = 0; i < options.stages(); ++i) names.push_back(stage_name("pos_embed", i));
  return names;
}

torch::Tensor PvtImpl::forward(const torch::Tensor& images) {
  const auto batch = images.size(0);
  const auto last = options.stages() - 1;
  torch::Tensor tokens;
  for (int64_t i = 0; i <= last; ++i) {
    // The previous stage's tokens back on their grid, the next patch embedding's input.
    const auto input =
        i == 0 ? images
               : tokens.transpose(1, 2).reshape(
                     {batch, -1, options.stage_resolution(i - 1), options.stage_resolution(i - 1)});
    tokens = patch_embeds[static_cast<size_t>(i)]->forward(input);
    if (i == last) {
      tokens = torch::cat({cls_token.expand({batch, -1, -1}).to(tokens.scalar_type()), tokens}, 1);
    }
    tokens = tokens + pos_embeds[static_cast<size_t>(i)];
    const auto grid = options.stage_resolution(i);
    for (const auto& block : *stages_[static_cast<size_t>(i)]) {
      tokens = block->as<PvtBlockImpl>()->forward(tokens, grid, grid);
    }
  }
  // The class token, normalised (the norm is per token), through the head.
  return head->forward(norm->forward(tokens.select(1, 0)));
}

}  // namespace exfusion
