// Swin Transformer with timm's layout (see swin.h; the reference: docs/design/
// swin-pvt-reference.md §1).
#include "exfusion/models/swin.h"

#include <ATen/ATen.h>

#include "exfusion/layers/attention.h"
#include "exfusion/util/error.h"
#include "exfusion/util/init.h"

namespace exfusion {
namespace {

LayerNorm swin_norm(int64_t dim, double eps) { return LayerNorm(LayerNormOptions(dim).eps(eps)); }

// timm's Swin init: every linear truncated normal (std .02) with zero biases.
Linear swin_linear(int64_t in, int64_t out, bool bias = true) {
  Linear linear(LinearOptions(in, out).bias(bias));
  const torch::NoGradGuard no_grad;
  trunc_normal_(linear->weight, 0.02);
  if (linear->bias.defined()) linear->bias.zero_();
  return linear;
}

// [B, H, W, D] → [B · (H/w) · (W/w), w², D]: windows batch-major, then by row, then by column;
// tokens row-major inside each.
torch::Tensor partition_windows(const torch::Tensor& x, int64_t window) {
  const auto b = x.size(0), h = x.size(1), w = x.size(2), d = x.size(3);
  return x.view({b, h / window, window, w / window, window, d})
      .permute({0, 1, 3, 2, 4, 5})
      .reshape({-1, window * window, d});
}

torch::Tensor reverse_windows(const torch::Tensor& windows, int64_t window, int64_t height,
                              int64_t width) {
  const auto d = windows.size(-1);
  return windows.view({-1, height / window, width / window, window, window, d})
      .permute({0, 1, 3, 2, 4, 5})
      .reshape({-1, height, width, d});
}

}  // namespace

void SwinOptions::apply_preset(const std::string& name, const config::Location& at) {
  // timm's swin_{tiny,small,base}_patch4_window7_224.
  img_size = 224, patch_size = 4, window_size = 7, mlp_ratio = 4.0;
  if (name == "swin_tiny_patch4_window7_224") {
    embed_dim = 96, depths = {2, 2, 6, 2}, num_heads = {3, 6, 12, 24};
  } else if (name == "swin_small_patch4_window7_224") {
    embed_dim = 96, depths = {2, 2, 18, 2}, num_heads = {3, 6, 12, 24};
  } else if (name == "swin_base_patch4_window7_224") {
    embed_dim = 128, depths = {2, 2, 18, 2}, num_heads = {4, 8, 16, 32};
  } else {
    config::fail(at, "preset", name,
                 "swin_tiny_patch4_window7_224, swin_small_patch4_window7_224 or "
                 "swin_base_patch4_window7_224");
  }
}

int64_t SwinOptions::stage_hidden(int64_t stage) const {
  return static_cast<int64_t>(static_cast<double>(stage_dim(stage)) * mlp_ratio);
}

int64_t SwinOptions::stage_window(int64_t stage) const {
  return std::min(window_size, stage_resolution(stage));
}

int64_t SwinOptions::block_shift(int64_t stage, int64_t block) const {
  if (block % 2 == 0 || stage_resolution(stage) <= window_size) return 0;
  return window_size / 2;
}

void SwinOptions::validate(const config::Location& at) const {
  const auto require = [&](bool ok, const char* key, const nlohmann::json& value,
                           const std::string& expected) {
    if (!ok) config::fail(at, key, value, expected);
  };
  require(patch_size > 0 && img_size % patch_size == 0, "patch_size", patch_size,
          "a positive divisor of " + at.key_path("img_size") + " = " + std::to_string(img_size));
  require(!depths.empty() && depths.size() <= 8, "depths", depths, "1 to 8 stages");
  for (const auto depth : depths) require(depth > 0, "depths", depths, "at least 1 block a stage");
  require(num_heads.size() == depths.size(), "num_heads", num_heads,
          "one count per stage (" + std::to_string(depths.size()) + ", as " +
              at.key_path("depths") + ")");
  for (int64_t i = 0; i < stages(); ++i) {
    const auto heads = num_heads[static_cast<size_t>(i)];
    require(heads > 0 && stage_dim(i) % heads == 0, "num_heads", num_heads,
            "counts that divide each stage's width (stage " + std::to_string(i) + ": " +
                std::to_string(stage_dim(i)) + ")");
    // Stage i's grid is the patch grid halved i times: each halving and each window must fit
    // it exactly (timm pads instead; we refuse, so no token is a padding token).
    const int64_t grid = (img_size / patch_size) >> i;
    require(i == 0 || ((img_size / patch_size) >> (i - 1)) % 2 == 0, "img_size", img_size,
            "a size whose patch grid (" + std::to_string(img_size / patch_size) +
                ") halves evenly into each of the " + std::to_string(stages()) + " stages");
    require(grid % stage_window(i) == 0, "window_size", window_size,
            "a window that divides stage " + std::to_string(i) + "'s grid of " +
                std::to_string(grid) + " tokens (or is at least as large)");
  }
  require(stage_hidden(stages() - 1) > 0 && stage_hidden(0) > 0, "mlp_ratio", mlp_ratio,
          "a ratio that gives a positive hidden width");
}

void SwinOptions::validate_ffn(const FfnConfig& config, const config::Location& at) const {
  int64_t blocks = 0;
  for (const auto depth : depths) blocks += depth;
  config.validate_layers(blocks, at);
}

std::vector<FfnSite> SwinOptions::ffn_sites() const {
  std::vector<FfnSite> sites;
  for (int64_t i = 0; i < stages(); ++i) {
    const auto tokens = static_cast<double>(stage_resolution(i) * stage_resolution(i));
    for (int64_t j = 0; j < depths[static_cast<size_t>(i)]; ++j) {
      sites.push_back({"layers." + std::to_string(i) + ".blocks." + std::to_string(j) + ".mlp",
                       static_cast<int64_t>(sites.size()), stage_dim(i), stage_hidden(i), tokens,
                       FfnForm::plain()});
    }
  }
  return sites;
}

TensorShapes SwinOptions::dense_tensor_shapes() const {
  const int64_t c = embed_dim;
  TensorShapes shapes = {{"patch_embed.proj.weight", {c, in_chans, patch_size, patch_size}},
                         {"patch_embed.proj.bias", {c}},
                         {"patch_embed.norm.weight", {c}},
                         {"patch_embed.norm.bias", {c}}};
  for (int64_t i = 0; i < stages(); ++i) {
    const auto stage = "layers." + std::to_string(i);
    const int64_t d = stage_dim(i), h = stage_hidden(i), w = stage_window(i);
    if (i > 0) {
      shapes.push_back({stage + ".downsample.norm.weight", {2 * d}});
      shapes.push_back({stage + ".downsample.norm.bias", {2 * d}});
      shapes.push_back({stage + ".downsample.reduction.weight", {d, 2 * d}});
    }
    for (int64_t j = 0; j < depths[static_cast<size_t>(i)]; ++j) {
      const auto block = stage + ".blocks." + std::to_string(j) + ".";
      const TensorShapes block_shapes = {
          {"norm1.weight", {d}},
          {"norm1.bias", {d}},
          {"attn.relative_position_bias_table",
           {(2 * w - 1) * (2 * w - 1), num_heads[static_cast<size_t>(i)]}},
          {"attn.qkv.weight", {3 * d, d}},
          {"attn.qkv.bias", {3 * d}},
          {"attn.proj.weight", {d, d}},
          {"attn.proj.bias", {d}},
          {"norm2.weight", {d}},
          {"norm2.bias", {d}},
          {"mlp.fc1.weight", {h, d}},
          {"mlp.fc1.bias", {h}},
          {"mlp.fc2.weight", {d, h}},
          {"mlp.fc2.bias", {d}}};
      for (const auto& [name, shape] : block_shapes) shapes.emplace_back(block + name, shape);
    }
  }
  const int64_t last = stage_dim(stages() - 1);
  shapes.push_back({"norm.weight", {last}});
  shapes.push_back({"norm.bias", {last}});
  shapes.push_back({"head.fc.weight", {num_classes, last}});
  shapes.push_back({"head.fc.bias", {num_classes}});
  return shapes;
}

double SwinOptions::parameters_outside_ffns() const {
  return values_outside_ffns(dense_tensor_shapes(), ffn_sites());
}

double SwinOptions::forward_flops_per_sample(const FfnConfig& config) const {
  const int64_t patches_per_side = img_size / patch_size;  // validate() makes it exact
  const double grid = static_cast<double>(patches_per_side);
  double macs = grid * grid * static_cast<double>(embed_dim * in_chans * patch_size * patch_size);
  auto options = *this;
  options.ffn = config;
  const auto sites = options.ffn_sites();
  size_t site = 0;
  for (int64_t i = 0; i < stages(); ++i) {
    const double d = static_cast<double>(stage_dim(i));
    const double tokens = static_cast<double>(stage_resolution(i) * stage_resolution(i));
    const double window_tokens = static_cast<double>(stage_window(i) * stage_window(i));
    if (i > 0) macs += tokens * 2.0 * d * d;  // the reduction: 4 · (D/2) in, D out per token
    for (int64_t j = 0; j < depths[static_cast<size_t>(i)]; ++j, ++site) {
      // qkv and proj per token, q·kᵀ and the weighted sum over each window's token pairs.
      macs += tokens * 4.0 * d * d + 2.0 * tokens * window_tokens * d;
      macs += tokens * config.forward_macs_per_token(sites[site]);
    }
  }
  macs += static_cast<double>(stage_dim(stages() - 1) * num_classes);
  return 2.0 * macs;
}

ModelPtr SwinOptions::build(const FfnConfig& config) const {
  auto options = *this;
  options.ffn = config;
  return std::make_shared<SwinTransformerImpl>(std::move(options));
}

torch::Tensor relative_position_index(int64_t window) {
  const auto coords = torch::arange(window, torch::kLong);
  const auto rows = coords.repeat_interleave(window);  // token n = y · w + x
  const auto cols = coords.repeat({window});
  const auto dy = rows.unsqueeze(1) - rows.unsqueeze(0) + (window - 1);
  const auto dx = cols.unsqueeze(1) - cols.unsqueeze(0) + (window - 1);
  return dy * (2 * window - 1) + dx;
}

torch::Tensor shifted_window_mask(int64_t resolution, int64_t window, int64_t shift) {
  // Each position's region after the roll: rows [0, R−w), [R−w, R−s), [R−s, R) by the same
  // columns, 9 labels; a token may attend only within its own region.
  const auto region = [&](int64_t position) {
    return position < resolution - window ? 0 : position < resolution - shift ? 1 : 2;
  };
  auto labels = torch::empty({1, resolution, resolution, 1});
  auto accessor = labels.accessor<float, 4>();
  for (int64_t y = 0; y < resolution; ++y) {
    for (int64_t x = 0; x < resolution; ++x) {
      accessor[0][y][x][0] = static_cast<float>(region(y) * 3 + region(x));
    }
  }
  const auto windows = partition_windows(labels, window).squeeze(-1);  // [nW, w²]
  const auto differ = windows.unsqueeze(1).ne(windows.unsqueeze(2));
  return torch::zeros(differ.sizes()).masked_fill(differ, -100.0);
}

SwinPatchEmbedImpl::SwinPatchEmbedImpl(int64_t in_chans, int64_t dim, int64_t patch_size,
                                       double eps) {
  proj = register_module(
      "proj",
      torch::nn::Conv2d(torch::nn::Conv2dOptions(in_chans, dim, patch_size).stride(patch_size)));
  norm = register_module("norm", swin_norm(dim, eps));
}

torch::Tensor SwinPatchEmbedImpl::forward(const torch::Tensor& images) {
  return norm->forward(proj->forward(images).permute({0, 2, 3, 1}));
}

PatchMergingImpl::PatchMergingImpl(int64_t dim, double eps) {
  norm = register_module("norm", swin_norm(4 * dim, eps));
  reduction = register_module("reduction", swin_linear(4 * dim, 2 * dim, /*bias=*/false));
}

torch::Tensor PatchMergingImpl::forward(const torch::Tensor& x) {
  const auto b = x.size(0), h = x.size(1), w = x.size(2), d = x.size(3);
  // [B, H/2, 2 (row offset), W/2, 2 (column offset), D] → column offset before row offset.
  const auto merged = x.reshape({b, h / 2, 2, w / 2, 2, d}).permute({0, 1, 3, 4, 2, 5}).flatten(3);
  return reduction->forward(norm->forward(merged));
}

WindowAttentionImpl::WindowAttentionImpl(int64_t dim, int64_t heads, int64_t window)
    : heads_(heads), window_(window), index_(relative_position_index(window)) {
  qkv = register_module("qkv", swin_linear(dim, 3 * dim));
  proj = register_module("proj", swin_linear(dim, dim));
  relative_position_bias_table = register_parameter(
      "relative_position_bias_table", torch::zeros({(2 * window - 1) * (2 * window - 1), heads}));
  const torch::NoGradGuard no_grad;
  trunc_normal_(relative_position_bias_table, 0.02);
}

torch::Tensor WindowAttentionImpl::forward(const torch::Tensor& windows,
                                           const torch::Tensor& mask) {
  const auto tokens = windows.size(1), dim = windows.size(2);
  const auto head_dim = dim / heads_;
  if (index_.device() != windows.device()) index_ = index_.to(windows.device());
  // The table's rows for every (query, key) pair: [1, heads, w², w²], plus the shift's mask,
  // one per window of an image: [nW, heads, w², w²].
  auto bias = relative_position_bias_table.index_select(0, index_.view(-1))
                  .view({tokens, tokens, heads_})
                  .permute({2, 0, 1})
                  .unsqueeze(0)
                  .to(windows.scalar_type());
  if (mask.defined()) bias = bias + mask.to(bias.device(), bias.scalar_type()).unsqueeze(1);
  auto options = AttentionOptions::standard(heads_, head_dim);
  options.additive = bias;
  const auto packed = qkv->forward(windows);
  return proj->forward(
      multi_head_attention({packed, 0, packed, dim, 2 * dim}, options, is_training()));
}

SwinBlockImpl::SwinBlockImpl(const SwinOptions& options, int64_t stage, int64_t block,
                             std::shared_ptr<FeedForwardImpl> ffn)
    : window(options.stage_window(stage)), shift(options.block_shift(stage, block)) {
  const auto dim = options.stage_dim(stage);
  norm1 = register_module("norm1", swin_norm(dim, options.norm_eps));
  attn = register_module(
      "attn", WindowAttention(dim, options.num_heads[static_cast<size_t>(stage)], window));
  norm2 = register_module("norm2", swin_norm(dim, options.norm_eps));
  mlp = register_module("mlp", std::move(ffn));
  if (shift > 0) attn_mask = shifted_window_mask(options.stage_resolution(stage), window, shift);
}

torch::Tensor SwinBlockImpl::forward(const torch::Tensor& x) {
  const auto b = x.size(0), h = x.size(1), w = x.size(2), d = x.size(3);
  auto y = norm1->forward(x);
  if (shift > 0) y = torch::roll(y, {-shift, -shift}, {1, 2});
  y = reverse_windows(attn->forward(partition_windows(y, window), attn_mask), window, h, w);
  if (shift > 0) y = torch::roll(y, {shift, shift}, {1, 2});
  const auto z = (x + y).view({b, h * w, d});
  return (z + mlp->forward(norm2->forward(z))).view({b, h, w, d});
}

SwinStageImpl::SwinStageImpl(const SwinOptions& options, int64_t stage,
                             std::vector<std::shared_ptr<FeedForwardImpl>> ffns) {
  if (stage > 0) {
    downsample =
        register_module("downsample", PatchMerging(options.stage_dim(stage - 1), options.norm_eps));
  }
  blocks = register_module("blocks", torch::nn::ModuleList());
  for (size_t j = 0; j < ffns.size(); ++j) {
    blocks->push_back(SwinBlock(options, stage, static_cast<int64_t>(j), std::move(ffns[j])));
  }
}

torch::Tensor SwinStageImpl::forward(const torch::Tensor& x) {
  auto y = downsample ? downsample->forward(x) : x;
  for (const auto& block : *blocks) y = block->as<SwinBlockImpl>()->forward(y);
  return y;
}

SwinHeadImpl::SwinHeadImpl(int64_t dim, int64_t classes) {
  fc = register_module("fc", swin_linear(dim, classes));
}

torch::Tensor SwinHeadImpl::forward(const torch::Tensor& x) { return fc->forward(x.mean({1, 2})); }

SwinTransformerImpl::SwinTransformerImpl(SwinOptions options_) : options(std::move(options_)) {
  options.validate();
  options.validate_ffn(options.ffn, {"", "ffn"});
  patch_embed = register_module(
      "patch_embed",
      SwinPatchEmbed(options.in_chans, options.embed_dim, options.patch_size, options.norm_eps));
  layers = register_module("layers", torch::nn::ModuleList());
  const auto sites = options.ffn_sites();
  size_t site = 0;
  for (int64_t i = 0; i < options.stages(); ++i) {
    std::vector<std::shared_ptr<FeedForwardImpl>> ffns;
    for (int64_t j = 0; j < options.depths[static_cast<size_t>(i)]; ++j) {
      ffns.push_back(options.ffn.build(sites[site++]));
    }
    layers->push_back(SwinStage(options, i, std::move(ffns)));
  }
  const auto last = options.stage_dim(options.stages() - 1);
  norm = register_module("norm", swin_norm(last, options.norm_eps));
  head = register_module("head", SwinHead(last, options.num_classes));
}

torch::Tensor SwinTransformerImpl::forward(const torch::Tensor& images) {
  auto x = patch_embed->forward(images);
  for (const auto& stage : *layers) x = stage->as<SwinStageImpl>()->forward(x);
  return head->forward(norm->forward(x));
}

}  // namespace exfusion
