// PVT v2's depthwise convolution inside the FFN (timm's MlpWithDepthwiseConv.dwconv): the hidden
// units of a square grid of tokens, each channel convolved with its own k × k kernel, padded to
// keep the grid. Its parameters are the checkpoint's `dwconv.weight` [C, 1, k, k] and
// `dwconv.bias` [C] directly (no inner module), as timm names them.
#pragma once
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <string>
#include <vector>

#include "exfusion/layers/capabilities.h"

namespace exfusion {

class DepthwiseGridConvImpl : public torch::nn::Module, public ExemptFromWeightDecay {
 public:
  DepthwiseGridConvImpl(int64_t channels, int64_t kernel);
  // tokens [B, N, C] with N a square grid's tokens in row-major order → [B, N, C].
  torch::Tensor forward(const torch::Tensor& tokens) const;
  std::vector<std::string> exempt_from_weight_decay() const override { return {"bias"}; }

  torch::Tensor weight, bias;
};
TORCH_MODULE(DepthwiseGridConv);

}  // namespace exfusion
