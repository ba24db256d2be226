// Swin Transformer (v1) with timm's SwinTransformer names and layout (docs/design/
// swin-pvt-reference.md §1), so a dense or fused checkpoint loads into timm unchanged: patch
// embedding with its norm, window attention with the relative position bias table, shifted
// windows with their mask, patch merging at the start of stages 1-3, the head as head.fc. The
// index and mask tensors are no buffers (timm keeps them non-persistent, so a strict load refuses
// them): each block rebuilds them. Every block's FFN is a site (`ffn.layers` counts the blocks of
// all stages in order); the model is kind "swin".
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

struct SwinOptions {
  int64_t img_size = 224;
  int64_t in_chans = 3;
  int64_t patch_size = 4;
  int64_t embed_dim = 96;                      // stage 0's width C; stage i's is C · 2^i
  std::vector<int64_t> depths = {2, 2, 6, 2};  // blocks per stage
  std::vector<int64_t> num_heads = {3, 6, 12, 24};
  int64_t window_size = 7;
  double mlp_ratio = 4.0;
  int64_t num_classes = 1000;
  double norm_eps = 1e-5;  // every LayerNorm's, as timm's Swin
  FfnConfig ffn;           // the run's `ffn` section

  template <class Fields>
  void fields(Fields& f) {
    f("img_size", img_size, "input height and width in pixels", config::in_range<int64_t>(1, 4096));
    f("in_chans", in_chans, "input channels", config::in_range<int64_t>(1, 64));
    f("patch_size", patch_size, "patch height and width of the embedding (divides img_size)",
      config::in_range<int64_t>(1, 4096));
    f("embed_dim", embed_dim, "stage 0's width C (stage i: C · 2^i)",
      config::in_range<int64_t>(1, 16384));
    f("depths", depths, "blocks per stage, e.g. [2, 2, 6, 2]");
    f("num_heads", num_heads, "attention heads per stage (each divides its stage's width)");
    f("window_size", window_size, "attention window height and width in tokens",
      config::in_range<int64_t>(1, 1024));
    f("mlp_ratio", mlp_ratio, "FFN hidden width / the stage's width",
      config::Check<double>{"a positive ratio up to 64",
                            [](double v) { return v > 0 && v <= 64; }});
    f("num_classes", num_classes, "classes of the head", config::in_range<int64_t>(1, 1000000));
    f("norm_eps", norm_eps, "epsilon of every LayerNorm (timm's Swin: 1e-5)",
      config::Check<double>{"a positive epsilon below 1", [](double v) { return v > 0 && v < 1; }});
  }
  // `preset: swin_tiny|swin_small|swin_base_patch4_window7_224` sets embed_dim, depths and
  // num_heads (timm's sizes, 224 px, patch 4, window 7).
  void apply_preset(const std::string& name, const config::Location& at);
  void validate(const config::Location& at = {"", "model"}) const;

  int64_t stages() const { return static_cast<int64_t>(depths.size()); }
  int64_t stage_dim(int64_t stage) const { return embed_dim << stage; }
  int64_t stage_resolution(int64_t stage) const { return img_size / patch_size >> stage; }
  int64_t stage_hidden(int64_t stage) const;
  // timm's window and shift of a stage (always_partition = false): a stage no larger than the
  // window is one window and never shifts.
  int64_t stage_window(int64_t stage) const;
  int64_t block_shift(int64_t stage, int64_t block) const;

  // The model-kind interface (models/model.h).
  ModelPtr build(const FfnConfig& ffn) const;
  // Multiply-adds × 2 of the convolution, the linears and the attention products (Swin's own
  // count: no norms, softmax or bias adds).
  double forward_flops_per_sample(const FfnConfig& ffn) const;
  void validate_ffn(const FfnConfig& ffn, const config::Location& at) const;
  std::vector<std::vector<int64_t>> input_shapes() const {
    return {{in_chans, img_size, img_size}};
  }
  int64_t num_outputs() const { return num_classes; }
  // layers.<i>.blocks.<j>.mlp, indexed over the blocks of all stages in order.
  std::vector<FfnSite> ffn_sites() const;
  TensorShapes dense_tensor_shapes() const;
  double parameters_outside_ffns() const;
};

// The additive mask of a shifted window stage (timm's, built once per block): [windows, w², w²],
// -100 between tokens that came from different regions of the image before the roll, else 0.
torch::Tensor shifted_window_mask(int64_t resolution, int64_t window, int64_t shift);
// The relative position index of a window: [w², w²] into the ((2w−1)², heads) table.
torch::Tensor relative_position_index(int64_t window);

class SwinPatchEmbedImpl : public torch::nn::Module, public ExemptFromWeightDecay {
 public:
  SwinPatchEmbedImpl(int64_t in_chans, int64_t dim, int64_t patch_size, double eps);
  std::vector<std::string> exempt_from_weight_decay() const override { return {"proj.bias"}; }
  torch::Tensor forward(const torch::Tensor& images);  // [B, C, H, W] -> [B, H', W', D]
  torch::nn::Conv2d proj{nullptr};
  LayerNorm norm{nullptr};
};
TORCH_MODULE(SwinPatchEmbed);

// Patch merging: each 2 × 2 group of tokens (row offset, column offset) = (0,0), (1,0), (0,1),
// (1,1) concatenated, normalised, and reduced to twice the width without a bias.
class PatchMergingImpl : public torch::nn::Module {
 public:
  PatchMergingImpl(int64_t dim, double eps);
  torch::Tensor forward(const torch::Tensor& x);  // [B, H, W, D] -> [B, H/2, W/2, 2D]
  LayerNorm norm{nullptr};
  Linear reduction{nullptr};
};
TORCH_MODULE(PatchMerging);

class WindowAttentionImpl : public torch::nn::Module, public ExemptFromWeightDecay {
 public:
  WindowAttentionImpl(int64_t dim, int64_t heads, int64_t window);
  std::vector<std::string> exempt_from_weight_decay() const override {
    return {"relative_position_bias_table"};
  }
  // windows [B·nW, w², D]; mask [nW, w², w²] or undefined.
  torch::Tensor forward(const torch::Tensor& windows, const torch::Tensor& mask);

  Linear qkv{nullptr}, proj{nullptr};
  torch::Tensor relative_position_bias_table;

 private:
  int64_t heads_, window_;
  torch::Tensor index_;  // not a buffer: timm's is non-persistent
};
TORCH_MODULE(WindowAttention);

class SwinBlockImpl : public torch::nn::Module {
 public:
  SwinBlockImpl(const SwinOptions& options, int64_t stage, int64_t block,
                std::shared_ptr<FeedForwardImpl> ffn);
  torch::Tensor forward(const torch::Tensor& x);  // [B, H, W, D]

  LayerNorm norm1{nullptr}, norm2{nullptr};
  WindowAttention attn{nullptr};
  std::shared_ptr<FeedForwardImpl> mlp;
  int64_t window, shift;
  torch::Tensor attn_mask;  // undefined without a shift; not a buffer (timm's is non-persistent)
};
TORCH_MODULE(SwinBlock);

class SwinStageImpl : public torch::nn::Module {
 public:
  SwinStageImpl(const SwinOptions& options, int64_t stage,
                std::vector<std::shared_ptr<FeedForwardImpl>> ffns);
  torch::Tensor forward(const torch::Tensor& x);
  PatchMerging downsample{nullptr};  // stages 1.. only
  torch::nn::ModuleList blocks{nullptr};
};
TORCH_MODULE(SwinStage);

// timm's ClassifierHead: the mean over the tokens, then `fc`.
class SwinHeadImpl : public torch::nn::Module {
 public:
  SwinHeadImpl(int64_t dim, int64_t classes);
  torch::Tensor forward(const torch::Tensor& x);  // [B, H, W, D] -> [B, classes]
  Linear fc{nullptr};
};
TORCH_MODULE(SwinHead);

class SwinTransformerImpl : public ModelImpl {
 public:
  explicit SwinTransformerImpl(SwinOptions options);
  torch::Tensor forward(const torch::Tensor& images) override;  // -> logits [B, num_classes]

  SwinOptions options;
  SwinPatchEmbed patch_embed{nullptr};
  torch::nn::ModuleList layers{nullptr};
  LayerNorm norm{nullptr};
  SwinHead head{nullptr};
};

}  // namespace exfusion
