// The LayerNorm the CPU and GPU LayerNorm tests share: LibTorch's module with random gamma and
// beta (ones and zeros would hide a swapped or ignored affine map).
#pragma once
#include <torch/nn/modules/normalization.h>
#include <torch/types.h>

namespace exfusion::testing {

constexpr double kLayerNormEps = 1e-6;

inline torch::nn::LayerNorm make_norm(int64_t width, torch::Dtype dtype, torch::Device device) {
  torch::nn::LayerNorm norm(torch::nn::LayerNormOptions({width}).eps(kLayerNormEps));
  norm->to(device, dtype);
  torch::NoGradGuard no_grad;
  norm->weight.normal_(1.0, 0.5);
  norm->bias.normal_(0.0, 0.5);
  return norm;
}

}  // namespace exfusion::testing
