// The ViT's LayerNorm forward. On CUDA (rows of at most 1024 values, float32 gamma/beta) it
// runs the kernels of layer_norm_kernels.cu through one autograd node: the output is written
// straight in the autocast dtype, which the next GEMM would cast it to anyway, and the
// backward computes gamma/beta's gradients in the same pass as dx. Elsewhere, and where the
// current FastPathScope's policy switches the kernels off (layer_norm_kernels,
// util/fast_paths.h), it is torch::nn::LayerNorm's forward. `reference::` holds the plain
// ATen version the kernels are tested against.
#pragma once
#include <torch/nn/modules/normalization.h>
#include <torch/types.h>

#include <tuple>

namespace exfusion {

torch::Tensor layer_norm(const torch::Tensor& x, const torch::nn::LayerNorm& norm);

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
