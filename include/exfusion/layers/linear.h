// The linear layers' forward pass, and where their backward computes the bias gradient.
// LibTorch's LinearImpl::forward runs matmul and then adds the bias as a separate float32 op
// under bf16 autocast; at::linear flattens to one addmm with the bias fused into the cuBLASLt
// GEMM (measured on an H100: those bias adds were 15 % of a ViT-B/16 training step). Its
// backward then sums the output gradient over rows in a kernel of its own (2.8 ms of that
// step); on CUDA, linear() instead asks cuBLASLt for that sum in the weight-gradient GEMM's
// epilogue (BGRADB) and writes the weight gradient in the weight's own dtype, where the current
// FastPathScope's policy allows it (bias_grad_epilogue, util/fast_paths.h). Linear is the
// module whose forward is linear(), so that no layer of ours can bypass that choice.
#pragma once
#include <ATen/ATen.h>
#include <torch/arg.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <ostream>
#include <string>
#include <tuple>
#include <vector>

#include "exfusion/layers/capabilities.h"

namespace exfusion {

// y = x Wᵀ + b over x's last dimension (b may be undefined). Under autocast, x, W and b are
// cast to the autocast dtype first, as at::linear's autocast rule does.
torch::Tensor linear(const torch::Tensor& x, const torch::Tensor& weight,
                     const torch::Tensor& bias);

struct LinearOptions {
  LinearOptions(int64_t in_features, int64_t out_features)
      : in_features_(in_features), out_features_(out_features) {}
  TORCH_ARG(int64_t, in_features);
  TORCH_ARG(int64_t, out_features);
  TORCH_ARG(bool, bias) = true;
};

// torch::nn::Linear's parameters and initialisation (`weight` [out, in] and `bias` [out],
// registered in that order and drawn from the same random stream), with linear() as forward.
class LinearImpl : public torch::nn::Cloneable<LinearImpl>, public ExemptFromWeightDecay {
 public:
  LinearImpl(int64_t in_features, int64_t out_features)
      : LinearImpl(LinearOptions(in_features, out_features)) {}
  explicit LinearImpl(const LinearOptions& options);

  void reset() override;
  // kaiming_uniform_ with a = sqrt(5) for the weight, U(±1/sqrt(in)) for the bias, as
  // torch::nn::LinearImpl::reset_parameters draws them.
  void reset_parameters();
  void pretty_print(std::ostream& stream) const override;
  torch::Tensor forward(const torch::Tensor& x);
  std::vector<std::string> exempt_from_weight_decay() const override;  // the bias

  LinearOptions options;
  torch::Tensor weight;
  torch::Tensor bias;  // undefined without options.bias()
};
TORCH_MODULE(Linear);

// ViT's init for a linear layer: truncated normal weight (std 0.02), zero bias (if any).
void init_vit_linear(const Linear& linear);

// A linear layer without a bias, its weight from an untruncated normal(0, std): Hugging Face's
// init of T5's and Llama's projections.
Linear bias_free_linear(int64_t in_features, int64_t out_features, double std);

// The same as linear(), always through the autograd node that linear() uses on CUDA, on any
// device: on CUDA its weight and bias gradients come from one cuBLASLt GEMM, elsewhere from
// reference::linear_weight_bias_grad. linear() is the call to use; this one is for the tests.
torch::Tensor linear_with_bias_grad_epilogue(const torch::Tensor& x, const torch::Tensor& weight,
                                             const torch::Tensor& bias);

namespace reference {
// (dW = dyᵀ x as `weight_dtype`, db = Σ_rows dy as `bias_dtype`) for dy [rows, out] and
// x [rows, in], accumulated in float32 (float64 for float64 inputs).
std::tuple<torch::Tensor, torch::Tensor> linear_weight_bias_grad(const torch::Tensor& dy,
                                                                 const torch::Tensor& x,
                                                                 torch::ScalarType weight_dtype,
                                                                 torch::ScalarType bias_dtype);
}  // namespace reference

}  // namespace exfusion
