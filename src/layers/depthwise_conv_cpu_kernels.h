// Entry points of the CPU depthwise grid convolution kernels (depthwise_conv_cpu_kernels.cpp):
// PVT v2's FFN convolution read and written in the tokens' own layout [batch, side², channels]
// (channels innermost, each one vector lane), where ATen's conv2d needs the grid transposed to
// [batch, channels, side, side] and back and took 8 to 13 ms of a 51 ms Fashion-MNIST step. The
// reference they are tested against is at::conv2d with groups = channels (depthwise_grid_conv).
#pragma once
#include <cstdint>

namespace exfusion::cpu {

// The kernel sizes the kernels cover: odd, up to 7 (PVT v2's is 3); padding kernel / 2.
constexpr int64_t kMaxDepthwiseKernel = 7;

struct DepthwiseGrid {
  int64_t batch = 0;
  int64_t side = 0;  // the grid is side × side tokens, row-major
  int64_t channels = 0;
  int64_t kernel = 0;
};

// out[b, y, x, c] = bias[c] + Σ_{i,j} taps[i k + j, c] · tokens[b, y + i − k/2, x + j − k/2, c]
// (zero outside the grid); taps is the weight [C, 1, k, k] transposed to [k², C]. bias may be
// null (none).
void depthwise_conv_forward(const DepthwiseGrid& grid, const float* tokens, const float* taps,
                            const float* bias, float* out);

// grad_tokens (the forward over grad_out with the taps flipped), grad_taps [k², C] and
// grad_bias [C]: the sums over the batch are per image, then over images in order, so the bits
// do not depend on the thread count.
void depthwise_conv_backward(const DepthwiseGrid& grid, const float* tokens, const float* taps,
                             const float* grad_out, float* grad_tokens, float* grad_taps,
                             float* grad_bias);

}  // namespace exfusion::cpu
