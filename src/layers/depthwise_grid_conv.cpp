// The FFN's depthwise grid convolution (see depthwise_grid_conv.h).
#include "exfusion/layers/depthwise_grid_conv.h"

#include <ATen/ATen.h>

#include <cmath>

#include "exfusion/util/error.h"

namespace exfusion {

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
  const auto grid = tokens.transpose(1, 2).reshape({batch, channels, side, side});
  const auto kernel = weight.size(-1);
  const auto mixed = at::conv2d(grid, weight.to(grid.scalar_type()), bias.to(grid.scalar_type()),
                                /*stride=*/1, /*padding=*/kernel / 2, /*dilation=*/1, channels);
  return mixed.flatten(2).transpose(1, 2);
}

}  // namespace exfusion
