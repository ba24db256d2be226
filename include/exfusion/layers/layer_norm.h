// The ViT's LayerNorm forward. On CUDA (rows of at most 1024 values, float32 gamma/beta) it
// runs the kernels of layer_norm_kernels.cu through one autograd node: the output is written
// straight in the autocast dtype, which the next GEMM would cast it to anyway, and the
// backward computes gamma/beta's gradients in the same pass as dx. Elsewhere, and where the
// current FastPathScope's policy switches the kernels off (layer_norm_kernels,
// util/fast_paths.h), it is torch::nn::LayerNorm's forward. LayerNorm is the module whose
// forward makes that choice; `reference::` holds the plain ATen version the kernels are tested
// against.
#pragma once
#include <torch/arg.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <cstdint>
#include <ostream>
#include <string>
#include <tuple>
#include <vector>

#include "exfusion/layers/capabilities.h"

namespace exfusion {

torch::Tensor layer_norm(const torch::Tensor& x, const torch::nn::LayerNorm& norm);

struct LayerNormOptions {
  explicit LayerNormOptions(int64_t normalized_dim) : normalized_dim_(normalized_dim) {}
  // The size of the last dimension, which is normalised.
  TORCH_ARG(int64_t, normalized_dim);
  TORCH_ARG(double, eps) = 1e-5;
};

// torch::nn::LayerNorm over the last dimension with a learned affine map: `weight` (ones) and
// `bias` (zeros), registered in that order; its forward is layer_norm()'s choice.
class LayerNormImpl : public torch::nn::Cloneable<LayerNormImpl>, public ExemptFromWeightDecay {
 public:
  explicit LayerNormImpl(int64_t normalized_dim)
      : LayerNormImpl(LayerNormOptions(normalized_dim)) {}
  explicit LayerNormImpl(const LayerNormOptions& options);

  void reset() override;
  void reset_parameters();
  void pretty_print(std::ostream& stream) const override;
  torch::Tensor forward(const torch::Tensor& x);
  std::vector<std::string> exempt_from_weight_decay() const override { return {"weight", "bias"}; }

  LayerNormOptions options;
  torch::Tensor weight;
  torch::Tensor bias;
};
TORCH_MODULE(LayerNorm);

namespace reference {
// (y as `out_dtype`, mean, rstd) over the last dimension; statistics in float32 (float64 for
// float64 input), mean and rstd shaped [rows].
std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> layer_norm_forward(
    const torch::Tensor& x, const torch::Tensor& gamma, const torch::Tensor& beta, double eps,
    torch::ScalarType out_dtype);
// (dx as x's dtype, dgamma, dbeta) from the statistics layer_norm_forward returned.
std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> layer_norm_backward(
    const torch::Tensor& dy, const torch::Tensor& x, const torch::Tensor& mean,
    const torch::Tensor& rstd, const torch::Tensor& gamma);
}  // namespace reference

}  // namespace exfusion
