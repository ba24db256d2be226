// CPU depthwise grid convolution kernels (see depthwise_conv_cpu_kernels.h): one vector holds 16
// channels of a token, and each image is first copied into a zero-bordered grid whose channels
// are padded to whole vectors, so that every output takes all k² taps (a compile-time count,
// unrolled) with no bounds test: PVT v2's grids are 7 or 4 tokens wide, where loops clipped at
// the border ran a few iterations each and cost more than the multiply-adds.
#include "depthwise_conv_cpu_kernels.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

#include "cpu_vectors.h"

namespace exfusion::cpu {
namespace {

EXFUSION_INLINE Vec load_lanes(const float* source, int64_t n) {
  return n == kLanes ? load(source) : load_partial(source, n);
}
EXFUSION_INLINE void store_lanes(const Vec& v, float* target, int64_t n) {
  if (n == kLanes) {
    store(v, target);
  } else {
    store_partial(v, target, n);
  }
}

// The channels rounded up to whole vectors: the stride of the padded grids and taps.
int64_t padded_channels(int64_t channels) { return (channels + kLanes - 1) / kLanes * kLanes; }

// One image [side², C] into the inside of `padded` [(side + 2 pad)², padded C], whose border and
// channels after C stay as they were: zeros, from padded_grid.
EXFUSION_INLINE void pad_image(const DepthwiseGrid& grid, const float* image, float* padded) {
  const int64_t side = grid.side, channels = grid.channels, stride = padded_channels(channels);
  const int64_t pad = grid.kernel / 2, wide = side + 2 * pad;
  for (int64_t y = 0; y < side; ++y) {
    for (int64_t x = 0; x < side; ++x) {
      const float* source = image + (y * side + x) * channels;
      float* target = padded + ((y + pad) * wide + x + pad) * stride;
      for (int64_t c = 0; c < channels; c += kLanes) {
        store_lanes(load_lanes(source + c, std::min(kLanes, channels - c)), target + c, kLanes);
      }
    }
  }
}

// `kTokens` neighbouring outputs of one grid row: each one's k² multiply-adds form a chain, so
// several tokens' chains go side by side, sharing each tap's load.
template <int64_t kKernel, int64_t kTokens>
EXFUSION_INLINE void convolve_tokens(const float* window, int64_t wide, int64_t stride,
                                     int64_t channels, const float* taps, const float* bias,
                                     float* target) {
  for (int64_t c = 0; c < channels; c += kLanes) {
    const int64_t n = std::min(kLanes, channels - c);
    const Vec start = bias ? load_lanes(bias + c, n) : Vec{};
    Vec sum[kTokens];
#pragma GCC unroll 8
    for (int64_t u = 0; u < kTokens; ++u) sum[u] = start;
#pragma GCC unroll 8
    for (int64_t i = 0; i < kKernel; ++i) {
#pragma GCC unroll 8
      for (int64_t j = 0; j < kKernel; ++j) {
        const Vec tap = load(taps + (i * kKernel + j) * stride + c);
        const float* source = window + (i * wide + j) * stride + c;
#pragma GCC unroll 8
        for (int64_t u = 0; u < kTokens; ++u) sum[u] += tap * load(source + u * stride);
      }
    }
#pragma GCC unroll 8
    for (int64_t u = 0; u < kTokens; ++u) store_lanes(sum[u], target + u * channels + c, n);
  }
}

// One image's output [side², C]: bias + Σ taps · the window of `padded` (pad_image) at each
// token; taps [k², padded C] (zeros after the channels).
template <int64_t kKernel>
EXFUSION_INLINE void convolve_image(const DepthwiseGrid& grid, const float* padded,
                                    const float* taps, const float* bias, float* out) {
  constexpr int64_t kBlock = 4;
  const int64_t side = grid.side, channels = grid.channels, stride = padded_channels(channels);
  const int64_t wide = side + 2 * (kKernel / 2);
  for (int64_t y = 0; y < side; ++y) {
    int64_t x = 0;
    for (; x + kBlock <= side; x += kBlock) {
      convolve_tokens<kKernel, kBlock>(padded + (y * wide + x) * stride, wide, stride, channels,
                                       taps, bias, out + (y * side + x) * channels);
    }
    for (; x < side; ++x) {
      convolve_tokens<kKernel, 1>(padded + (y * wide + x) * stride, wide, stride, channels, taps,
                                  bias, out + (y * side + x) * channels);
    }
  }
}

// One image's Σ_{y,x} grad_out[y, x] · in[y + i − pad, x + j − pad] per tap (i, j) and
// Σ grad_out, into partial[k² + 1, padded C]; `padded` is the image's input (pad_image).
template <int64_t kKernel>
EXFUSION_INLINE void image_tap_sums(const DepthwiseGrid& grid, const float* padded,
                                    const float* grad_out, float* partial) {
  constexpr int64_t count = kKernel * kKernel;
  const int64_t side = grid.side, channels = grid.channels, stride = padded_channels(channels);
  const int64_t wide = side + 2 * (kKernel / 2);
  for (int64_t c = 0; c < channels; c += kLanes) {
    const int64_t n = std::min(kLanes, channels - c);
    Vec tap_sum[count] = {};
    Vec bias_sum{};
    for (int64_t y = 0; y < side; ++y) {
      for (int64_t x = 0; x < side; ++x) {
        const Vec g = load_lanes(grad_out + (y * side + x) * channels + c, n);
        const float* window = padded + (y * wide + x) * stride + c;
        bias_sum += g;
#pragma GCC unroll 8
        for (int64_t i = 0; i < kKernel; ++i) {
#pragma GCC unroll 8
          for (int64_t j = 0; j < kKernel; ++j) {
            tap_sum[i * kKernel + j] += g * load(window + (i * wide + j) * stride);
          }
        }
      }
    }
    for (int64_t t = 0; t < count; ++t) store(tap_sum[t], partial + t * stride + c);
    store(bias_sum, partial + count * stride + c);
  }
}

// The cloned entry points (target_clones takes functions, not templates), over the covered
// kernel sizes.
EXFUSION_SIMD_CLONES
void convolve_padded_image(const DepthwiseGrid& grid, const float* image, float* padded,
                           const float* taps, const float* bias, float* out) {
  pad_image(grid, image, padded);
  switch (grid.kernel) {
    case 1:
      return convolve_image<1>(grid, padded, taps, bias, out);
    case 3:
      return convolve_image<3>(grid, padded, taps, bias, out);
    case 5:
      return convolve_image<5>(grid, padded, taps, bias, out);
    default:
      return convolve_image<kMaxDepthwiseKernel>(grid, padded, taps, bias, out);
  }
}
EXFUSION_SIMD_CLONES
void tap_sums_of_image(const DepthwiseGrid& grid, const float* image, float* padded,
                       const float* grad_out, float* partial) {
  pad_image(grid, image, padded);
  switch (grid.kernel) {
    case 1:
      return image_tap_sums<1>(grid, padded, grad_out, partial);
    case 3:
      return image_tap_sums<3>(grid, padded, grad_out, partial);
    case 5:
      return image_tap_sums<5>(grid, padded, grad_out, partial);
    default:
      return image_tap_sums<kMaxDepthwiseKernel>(grid, padded, grad_out, partial);
  }
}
EXFUSION_SIMD_CLONES
void sum_over_images(int64_t images, int64_t stride, const float* partials, int64_t begin,
                     int64_t end, float* out) {
  for (int64_t f = begin; f < end; f += kLanes) {
    Vec sum{};
    for (int64_t image = 0; image < images; ++image) sum += load(partials + image * stride + f);
    store(sum, out + f);
  }
}

// A zeroed grid for pad_image: one per task, whose border no image overwrites.
std::vector<float> padded_grid(const DepthwiseGrid& grid) {
  const int64_t wide = grid.side + 2 * (grid.kernel / 2);
  return std::vector<float>(static_cast<size_t>(wide * wide * padded_channels(grid.channels)));
}

// [k², C] taps into [k², padded C], zeros after the channels; flipped (tap t from k² − 1 − t)
// for the gradient of the tokens.
std::vector<float> padded_taps(const DepthwiseGrid& grid, const float* taps, bool flipped) {
  const int64_t count = grid.kernel * grid.kernel, stride = padded_channels(grid.channels);
  std::vector<float> out(static_cast<size_t>(count * stride), 0.f);
  for (int64_t t = 0; t < count; ++t) {
    std::copy_n(taps + (flipped ? count - 1 - t : t) * grid.channels, grid.channels,
                out.data() + t * stride);
  }
  return out;
}

}  // namespace

void depthwise_conv_forward(const DepthwiseGrid& grid, const float* tokens, const float* taps,
                            const float* bias, float* out) {
  const auto padded_taps_ = padded_taps(grid, taps, false);
  const int64_t image_floats = grid.side * grid.side * grid.channels;
  at::parallel_for(0, grid.batch, 1, [&](int64_t begin, int64_t end) {
    auto padded = padded_grid(grid);
    for (int64_t image = begin; image < end; ++image) {
      convolve_padded_image(grid, tokens + image * image_floats, padded.data(), padded_taps_.data(),
                            bias, out + image * image_floats);
    }
  });
}

void depthwise_conv_backward(const DepthwiseGrid& grid, const float* tokens, const float* taps,
                             const float* grad_out, float* grad_tokens, float* grad_taps,
                             float* grad_bias) {
  // dL/dtokens[y, x] = Σ taps[i, j] grad_out[y − i + pad, x − j + pad]: the forward over
  // grad_out with tap (i, j) at (k − 1 − i, k − 1 − j).
  const auto flipped = padded_taps(grid, taps, true);
  const int64_t count = grid.kernel * grid.kernel, stride = padded_channels(grid.channels);
  const int64_t image_floats = grid.side * grid.side * grid.channels;
  const int64_t partial_floats = (count + 1) * stride;
  std::vector<float> partials(static_cast<size_t>(grid.batch * partial_floats));
  at::parallel_for(0, grid.batch, 1, [&](int64_t begin, int64_t end) {
    auto padded = padded_grid(grid);
    for (int64_t image = begin; image < end; ++image) {
      const int64_t offset = image * image_floats;
      convolve_padded_image(grid, grad_out + offset, padded.data(), flipped.data(), nullptr,
                            grad_tokens + offset);
      tap_sums_of_image(grid, tokens + offset, padded.data(), grad_out + offset,
                        partials.data() + image * partial_floats);
    }
  });
  // Each float sums its images in order, whichever thread takes it.
  std::vector<float> sums(static_cast<size_t>(partial_floats));
  at::parallel_for(0, partial_floats / kLanes, 16, [&](int64_t begin, int64_t end) {
    sum_over_images(grid.batch, partial_floats, partials.data(), begin * kLanes, end * kLanes,
                    sums.data());
  });
  for (int64_t t = 0; t <= count; ++t) {
    std::copy_n(sums.data() + t * stride, grid.channels,
                t < count ? grad_taps + t * grid.channels : grad_bias);
  }
}

}  // namespace exfusion::cpu
