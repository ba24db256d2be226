// The FFN's depthwise grid convolution (see depthwise_grid_conv.h): the autograd node over
// depthwise_conv_cpu_kernels on the tokens' layout, and the choice between it and at::conv2d on
// the grid transposed to [batch, channels, side, side], its reference.
#include "exfusion/layers/depthwise_grid_conv.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>

#include <cmath>

#include "depthwise_conv_cpu_kernels.h"
#include "exfusion/util/error.h"
#include "exfusion/util/fast_paths.h"

namespace exfusion {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

struct DepthwiseConvOnCpu : public torch::autograd::Function<DepthwiseConvOnCpu> {
  // tokens [B, side², C]; weight [C, 1, k, k]; bias [C].
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& tokens,
                               const torch::Tensor& weight, const torch::Tensor& bias,
                               int64_t side) {
    const auto values = tokens.contiguous();
    const auto taps = weight.flatten(1).t().contiguous();  // [k², C]
    const auto bias_values = bias.contiguous();
    auto out = torch::empty_like(values);
    cpu::depthwise_conv_forward(grid_of(values, weight, side), values.data_ptr<float>(),
                                taps.data_ptr<float>(), bias_values.data_ptr<float>(),
                                out.data_ptr<float>());
    ctx->save_for_backward({values, taps, weight});
    ctx->saved_data["side"] = side;
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto& tokens = saved[0];
    const auto& taps = saved[1];
    const auto& weight = saved[2];
    const auto grad_out = grads[0].contiguous();
    auto grad_tokens = torch::empty_like(tokens);
    auto grad_taps = torch::empty_like(taps);
    auto grad_bias = torch::empty({taps.size(1)}, taps.options());
    cpu::depthwise_conv_backward(grid_of(tokens, weight, ctx->saved_data["side"].toInt()),
                                 tokens.data_ptr<float>(), taps.data_ptr<float>(),
                                 grad_out.data_ptr<float>(), grad_tokens.data_ptr<float>(),
                                 grad_taps.data_ptr<float>(), grad_bias.data_ptr<float>());
    return {grad_tokens, grad_taps.t().reshape(weight.sizes()), grad_bias, torch::Tensor()};
  }

  static cpu::DepthwiseGrid grid_of(const torch::Tensor& tokens, const torch::Tensor& weight,
                                    int64_t side) {
    return {tokens.size(0), side, tokens.size(2), weight.size(-1)};
  }
};

// Whether the kernels cover this convolution: float32 on the CPU, an odd kernel up to
// kMaxDepthwiseKernel.
bool kernels_cover(const torch::Tensor& tokens, const torch::Tensor& weight,
                   const torch::Tensor& bias) {
  const auto kernel = weight.size(-1);
  return tokens.scalar_type() == torch::kFloat32 && weight.scalar_type() == torch::kFloat32 &&
         bias.scalar_type() == torch::kFloat32 && kernel % 2 == 1 &&
         kernel <= cpu::kMaxDepthwiseKernel;
}

}  // namespace

DepthwiseGridConvImpl::DepthwiseGridConvImpl(int64_t channels, int64_t kernel) {
  weight = register_parameter("weight", torch::empty({channels, 1, kernel, kernel}));
  bias = register_parameter("bias", torch::zeros({channels}));
  // timm's PVT v2 init for a convolution: N(0, 2 / fan_out), fan_out = k² · C / groups = k².
  const torch::NoGradGuard no_grad;
  weight.normal_(0.0, std::sqrt(2.0 / static_cast<double>(kernel * kernel)));
}

torch::Tensor DepthwiseGridConvImpl::forward(const torch::Tensor& tokens) const {
  const auto batch = tokens.size(0), count = tokens.size(1), channels = tokens.size(2);
  const auto side = static_cast<int64_t>(std::llround(std::sqrt(static_cast<double>(count))));
  if (side * side != count) {
    throw InputError("the FFN's depthwise convolution needs a square grid of tokens, and got " +
                     std::to_string(count));
  }
  // Counted where the kernels could apply (CPU inputs), as a fallback where they do not cover
  // the dtype or the kernel size.
  if (FastPathScope::policy().depthwise_conv_kernels && tokens.is_cpu()) {
    const bool covered = kernels_cover(tokens, weight, bias);
    count_fast_path_call(FastPath::kDepthwiseConvKernels, covered);
    if (covered) return DepthwiseConvOnCpu::apply(tokens, weight, bias, side);
  }
  const auto grid = tokens.transpose(1, 2).reshape({batch, channels, side, side});
  const auto kernel = weight.size(-1);
  const auto mixed = at::conv2d(grid, weight.to(grid.scalar_type()), bias.to(grid.scalar_type()),
                                /*stride=*/1, /*padding=*/kernel / 2, /*dilation=*/1, channels);
  return mixed.flatten(2).transpose(1, 2);
}

}  // namespace exfusion
