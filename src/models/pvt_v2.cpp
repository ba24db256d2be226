// PVT v2 with timm's layout (see pvt_v2.h; the reference: docs/design/
// swin-pvt-reference.md §2).
#include "exfusion/models/pvt_v2.h"

#include <ATen/ATen.h>

#include <cmath>

#include "exfusion/util/error.h"
#include "exfusion/util/init.h"

namespace exfusion {
namespace {

constexpr int64_t kStemKernel = 7, kStemStride = 4, kDownKernel = 3, kDownStride = 2;
constexpr int64_t kFfnDepthwiseKernel = 3;

// The side a convolution of kernel k, stride s and padding k / 2 makes of `side`.
int64_t conv_side(int64_t side, int64_t kernel, int64_t stride) {
  return (side + 2 * (kernel / 2) - kernel) / stride + 1;
}

FfnForm pvt_v2_ffn_form() {
  auto form = FfnForm::plain();
  form.depthwise_kernel = kFfnDepthwiseKernel;
  return form;
}

}  // namespace

void PvtV2Options::apply_preset(const std::string& name, const config::Location& at) {
  img_size = 224;
  num_heads = {1, 2, 5, 8}, sr_ratios = {8, 4, 2, 1}, mlp_ratios = {8, 8, 4, 4};
  embed_dims = {64, 128, 320, 512};
  if (name == "pvt_v2_b0") {
    embed_dims = {32, 64, 160, 256}, depths = {2, 2, 2, 2};
  } else if (name == "pvt_v2_b1") {
    depths = {2, 2, 2, 2};
  } else if (name == "pvt_v2_b2") {
    depths = {3, 4, 6, 3};
  } else if (name == "pvt_v2_b3") {
    depths = {3, 4, 18, 3};
  } else if (name == "pvt_v2_b4") {
    depths = {3, 8, 27, 3};
  } else if (name == "pvt_v2_b5") {
    depths = {3, 6, 40, 3}, mlp_ratios = {4, 4, 4, 4};
  } else {
    config::fail(at, "preset", name, "pvt_v2_b0, pvt_v2_b1, ... or pvt_v2_b5");
  }
}

int64_t PvtV2Options::stage_resolution(int64_t stage) const {
  auto side = conv_side(img_size, kStemKernel, kStemStride);
  for (int64_t i = 1; i <= stage; ++i) side = conv_side(side, kDownKernel, kDownStride);
  return side;
}

int64_t PvtV2Options::stage_hidden(int64_t stage) const {
  const auto i = static_cast<size_t>(stage);
  return static_cast<int64_t>(static_cast<double>(embed_dims[i]) * mlp_ratios[i]);
}

void PvtV2Options::validate(const config::Location& at) const {
  const auto require = [&](bool ok, const char* key, const nlohmann::json& value,
                           const std::string& expected) {
    if (!ok) config::fail(at, key, value, expected);
  };
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
    // The reduction's convolution must leave at least one key.
    require(sr_ratios[s] > 0 && sr_ratios[s] <= stage_resolution(i), "sr_ratios", sr_ratios,
            "ratios from 1 to each stage's grid side (stage " + std::to_string(i) + ": " +
                std::to_string(stage_resolution(i)) + " tokens)");
  }
}

void PvtV2Options::validate_ffn(const FfnConfig& config, const config::Location& at) const {
  int64_t blocks = 0;
  for (const auto depth : depths) blocks += depth;
  config.validate_layers(blocks, at);
}

std::vector<FfnSite> PvtV2Options::ffn_sites() const {
  std::vector<FfnSite> sites;
  for (int64_t i = 0; i < stages(); ++i) {
    const auto tokens = static_cast<double>(stage_resolution(i) * stage_resolution(i));
    for (int64_t j = 0; j < depths[static_cast<size_t>(i)]; ++j) {
      sites.push_back({"stages." + std::to_string(i) + ".blocks." + std::to_string(j) + ".mlp",
                       static_cast<int64_t>(sites.size()), embed_dims[static_cast<size_t>(i)],
                       stage_hidden(i), tokens, pvt_v2_ffn_form()});
    }
  }
  return sites;
}

TensorShapes PvtV2Options::dense_tensor_shapes() const {
  TensorShapes shapes = {
      {"patch_embed.proj.weight", {embed_dims[0], in_chans, kStemKernel, kStemKernel}},
      {"patch_embed.proj.bias", {embed_dims[0]}},
      {"patch_embed.norm.weight", {embed_dims[0]}},
      {"patch_embed.norm.bias", {embed_dims[0]}}};
  for (int64_t i = 0; i < stages(); ++i) {
    const auto s = static_cast<size_t>(i);
    const int64_t d = embed_dims[s], h = stage_hidden(i), r = sr_ratios[s];
    const auto stage = "stages." + std::to_string(i) + ".";
    if (i > 0) {
      shapes.push_back(
          {stage + "downsample.proj.weight", {d, embed_dims[s - 1], kDownKernel, kDownKernel}});
      shapes.push_back({stage + "downsample.proj.bias", {d}});
      shapes.push_back({stage + "downsample.norm.weight", {d}});
      shapes.push_back({stage + "downsample.norm.bias", {d}});
    }
    for (int64_t j = 0; j < depths[s]; ++j) {
      const auto block = stage + "blocks." + std::to_string(j) + ".";
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
      for (const auto& entry :
           TensorShapes{{"norm2.weight", {d}},
                        {"norm2.bias", {d}},
                        {"mlp.fc1.weight", {h, d}},
                        {"mlp.fc1.bias", {h}},
                        {"mlp.dwconv.weight", {h, 1, kFfnDepthwiseKernel, kFfnDepthwiseKernel}},
                        {"mlp.dwconv.bias", {h}},
                        {"mlp.fc2.weight", {d, h}},
                        {"mlp.fc2.bias", {d}}}) {
        block_shapes.push_back(entry);
      }
      for (const auto& [name, shape] : block_shapes) shapes.emplace_back(block + name, shape);
    }
    shapes.push_back({stage + "norm.weight", {d}});
    shapes.push_back({stage + "norm.bias", {d}});
  }
  shapes.push_back({"head.weight", {num_classes, embed_dims.back()}});
  shapes.push_back({"head.bias", {num_classes}});
  return shapes;
}

double PvtV2Options::parameters_outside_ffns() const {
  return values_outside_ffns(dense_tensor_shapes(), ffn_sites());
}

double PvtV2Options::forward_flops_per_sample(const FfnConfig& config) const {
  auto options = *this;
  options.ffn = config;
  const auto sites = options.ffn_sites();
  double macs = 0;
  size_t site = 0;
  for (int64_t i = 0; i < stages(); ++i) {
    const auto s = static_cast<size_t>(i);
    const double d = static_cast<double>(embed_dims[s]);
    const double side = static_cast<double>(stage_resolution(i));
    const double tokens = side * side;
    const double kernel = static_cast<double>(i == 0 ? kStemKernel : kDownKernel);
    const double in = static_cast<double>(i == 0 ? in_chans : embed_dims[s - 1]);
    macs += tokens * d * in * kernel * kernel;  // the patch embedding
    const auto r = sr_ratios[s];
    // The keys' grid: floored, as the reduction's convolution floors it.
    const int64_t reduced_side = r > 1 ? stage_resolution(i) / r : stage_resolution(i);
    const double reduced = static_cast<double>(reduced_side * reduced_side);
    for (int64_t j = 0; j < depths[s]; ++j, ++site) {
      macs += tokens * 2.0 * d * d + reduced * 2.0 * d * d;             // q and proj; kv
      if (r > 1) macs += reduced * d * d * static_cast<double>(r * r);  // the reduction
      macs += 2.0 * tokens * reduced * d;  // q·kᵀ and the weighted sum
      macs += tokens * config.forward_macs_per_token(sites[site]);
    }
  }
  macs += static_cast<double>(embed_dims.back() * num_classes);
  return 2.0 * macs;
}

ModelPtr PvtV2Options::build(const FfnConfig& config) const {
  auto options = *this;
  options.ffn = config;
  return std::make_shared<PvtV2Impl>(std::move(options));
}

OverlapPatchEmbedImpl::OverlapPatchEmbedImpl(int64_t in_chans, int64_t dim, int64_t kernel,
                                             int64_t stride) {
  proj = register_module(
      "proj",
      torch::nn::Conv2d(
          torch::nn::Conv2dOptions(in_chans, dim, kernel).stride(stride).padding(kernel / 2)));
  norm = register_module("norm", LayerNorm(LayerNormOptions(dim).eps(1e-5)));
  // timm's PVT v2 init for a convolution: N(0, 2 / fan_out), fan_out = k² · out channels.
  const torch::NoGradGuard no_grad;
  proj->weight.normal_(0.0, std::sqrt(2.0 / static_cast<double>(kernel * kernel * dim)));
  proj->bias.zero_();
}

torch::Tensor OverlapPatchEmbedImpl::forward(const torch::Tensor& images) {
  return norm->forward(proj->forward(images).permute({0, 2, 3, 1}));
}

PvtV2StageImpl::PvtV2StageImpl(const PvtV2Options& options, int64_t stage,
                               std::vector<std::shared_ptr<FeedForwardImpl>> ffns) {
  const auto s = static_cast<size_t>(stage);
  const auto dim = options.embed_dims[s];
  if (stage > 0) {
    downsample = register_module(
        "downsample", OverlapPatchEmbed(options.embed_dims[s - 1], dim, kDownKernel, kDownStride));
  }
  blocks = register_module("blocks", torch::nn::ModuleList());
  for (auto& ffn : ffns) {
    blocks->push_back(PvtBlock(dim, options.num_heads[s], options.sr_ratios[s], std::move(ffn)));
  }
  norm = register_module("norm", LayerNorm(LayerNormOptions(dim).eps(1e-6)));
}

torch::Tensor PvtV2StageImpl::forward(const torch::Tensor& x) {
  const auto grid = downsample ? downsample->forward(x.permute({0, 3, 1, 2})) : x;
  const auto batch = grid.size(0), height = grid.size(1), width = grid.size(2);
  auto tokens = grid.reshape({batch, height * width, grid.size(3)});
  for (const auto& block : *blocks) {
    tokens = block->as<PvtBlockImpl>()->forward(tokens, height, width);
  }
  return norm->forward(tokens).view({batch, height, width, -1});
}

PvtV2Impl::PvtV2Impl(PvtV2Options options_) : options(std::move(options_)) {
  options.validate();
  options.validate_ffn(options.ffn, {"", "ffn"});
  patch_embed = register_module(
      "patch_embed",
      OverlapPatchEmbed(options.in_chans, options.embed_dims[0], kStemKernel, kStemStride));
  stages_ = register_module("stages", torch::nn::ModuleList());
  const auto sites = options.ffn_sites();
  size_t site = 0;
  for (int64_t i = 0; i < options.stages(); ++i) {
    std::vector<std::shared_ptr<FeedForwardImpl>> ffns;
    for (int64_t j = 0; j < options.depths[static_cast<size_t>(i)]; ++j) {
      ffns.push_back(options.ffn.build(sites[site++]));
    }
    stages_->push_back(PvtV2Stage(options, i, std::move(ffns)));
  }
  head = register_module("head", Linear(options.embed_dims.back(), options.num_classes));
  const torch::NoGradGuard no_grad;
  trunc_normal_(head->weight, 0.02);
  head->bias.zero_();
}

torch::Tensor PvtV2Impl::forward(const torch::Tensor& images) {
  auto x = patch_embed->forward(images);
  for (const auto& stage : *stages_) x = stage->as<PvtV2StageImpl>()->forward(x);
  return head->forward(x.mean({1, 2}));
}

}  // namespace exfusion
