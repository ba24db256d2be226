// PVT v2 with timm's PyramidVisionTransformerV2 names and layout (docs/design/
// swin-pvt-reference.md §2), so a dense or fused checkpoint loads into timm unchanged:
// overlapping patch embeddings (a 7 × 7 stride-4 convolution, then 3 × 3 stride-2 ones at the
// start of stages 1..), spatial-reduction attention (models/pvt.h's), the FFN with its depthwise
// 3 × 3 convolution between fc1 and fc2 (one dense layer every expert shares: FfnForm's
// depthwise_kernel), one norm per stage, and `head` over the mean of the last stage's tokens.
// Every block's FFN is a site (`ffn.layers` counts the blocks of all stages in order); the model
// is kind "pvt_v2".
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
#include "exfusion/models/pvt.h"

namespace exfusion {

struct PvtV2Options {
  int64_t img_size = 224;
  int64_t in_chans = 3;
  std::vector<int64_t> embed_dims = {32, 64, 160, 256};
  std::vector<int64_t> num_heads = {1, 2, 5, 8};
  std::vector<double> mlp_ratios = {8, 8, 4, 4};
  std::vector<int64_t> depths = {2, 2, 2, 2};
  std::vector<int64_t> sr_ratios = {8, 4, 2, 1};
  int64_t num_classes = 1000;
  FfnConfig ffn;  // the run's `ffn` section

  template <class Fields>
  void fields(Fields& f) {
    f("img_size", img_size, "input height and width in pixels", config::in_range<int64_t>(4, 4096));
    f("in_chans", in_chans, "input channels", config::in_range<int64_t>(1, 64));
    f("embed_dims", embed_dims, "width per stage, e.g. [32, 64, 160, 256]");
    f("num_heads", num_heads, "attention heads per stage (each divides its width)");
    f("mlp_ratios", mlp_ratios, "FFN hidden width / the stage's width, per stage");
    f("depths", depths, "blocks per stage");
    f("sr_ratios", sr_ratios, "spatial reduction of the keys and values per stage (1: none)");
    f("num_classes", num_classes, "classes of the head", config::in_range<int64_t>(1, 1000000));
  }
  // `preset: pvt_v2_b0 … pvt_v2_b5`: timm's sizes.
  void apply_preset(const std::string& name, const config::Location& at);
  void validate(const config::Location& at = {"", "model"}) const;

  int64_t stages() const { return static_cast<int64_t>(depths.size()); }
  // The token grid's side in a stage: the stride-4 embedding's (padding 3), then each stride-2
  // one's (padding 1), as the convolutions' output sizes come out.
  int64_t stage_resolution(int64_t stage) const;
  int64_t stage_hidden(int64_t stage) const;

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
  // stages.<i>.blocks.<j>.mlp, indexed over all stages in order; each with its depthwise 3 × 3
  // convolution.
  std::vector<FfnSite> ffn_sites() const;
  TensorShapes dense_tensor_shapes() const;
  double parameters_outside_ffns() const;
};

// An overlapping patch embedding: a k × k convolution of stride s and padding k / 2, then a
// norm over each position's channels (timm's OverlapPatchEmbed).
class OverlapPatchEmbedImpl : public torch::nn::Module, public ExemptFromWeightDecay {
 public:
  OverlapPatchEmbedImpl(int64_t in_chans, int64_t dim, int64_t kernel, int64_t stride);
  std::vector<std::string> exempt_from_weight_decay() const override { return {"proj.bias"}; }
  torch::Tensor forward(const torch::Tensor& images);  // [B, C, H, W] -> [B, H', W', D]
  torch::nn::Conv2d proj{nullptr};
  LayerNorm norm{nullptr};
};
TORCH_MODULE(OverlapPatchEmbed);

class PvtV2StageImpl : public torch::nn::Module {
 public:
  PvtV2StageImpl(const PvtV2Options& options, int64_t stage,
                 std::vector<std::shared_ptr<FeedForwardImpl>> ffns);
  torch::Tensor forward(const torch::Tensor& x);  // [B, H, W, D_in] -> [B, H', W', D]
  OverlapPatchEmbed downsample{nullptr};          // stages 1.. only
  torch::nn::ModuleList blocks{nullptr};
  LayerNorm norm{nullptr};
};
TORCH_MODULE(PvtV2Stage);

class PvtV2Impl : public ModelImpl {
 public:
  explicit PvtV2Impl(PvtV2Options options);
  torch::Tensor forward(const torch::Tensor& images) override;  // -> logits [B, num_classes]

  PvtV2Options options;
  OverlapPatchEmbed patch_embed{nullptr};
  torch::nn::ModuleList stages_{nullptr};
  Linear head{nullptr};
};

}  // namespace exfusion
