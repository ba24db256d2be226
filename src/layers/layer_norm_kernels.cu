// LayerNorm forward and backward for rows of up to 1024 values: a warp per row, the row in
// registers. The backward computes dx and the block's partial gamma/beta gradients in the
// same pass over dy and x, where PyTorch re-reads both in a separate gamma/beta kernel
// (measured at 5.3 ms of a 37 ms DeiT-Ti step). The forward writes its output in the dtype
// the next GEMM reads. The ATen reference they are tested against is in layer_norm.cpp.
#include <algorithm>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "../util/cuda_numeric.cuh"
#include "layer_norm_kernels_cuda.h"

namespace exfusion::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kMaxPartialBlocks = 512;

template <typename In, typename Out, int PerLane>
__global__ void __launch_bounds__(kThreads)
    layer_norm_forward_kernel(const In* __restrict__ x, const float* __restrict__ gamma,
                              const float* __restrict__ beta, int64_t rows, int width, float eps,
                              Out* __restrict__ y, float* __restrict__ mean_out,
                              float* __restrict__ rstd_out) {
  const int lane = static_cast<int>(threadIdx.x % 32);
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32;
  if (row >= rows) return;  // the whole warp: all its lanes share the row
  const In* xr = x + row * width;
  float v[PerLane];
  float sum = 0.0f;
#pragma unroll
  for (int k = 0; k < PerLane; ++k) {
    const int c = lane + 32 * k;
    v[k] = c < width ? to_float(xr[c]) : 0.0f;
    sum += v[k];
  }
  const float mean = warp_sum(sum) / static_cast<float>(width);
  float squares = 0.0f;
#pragma unroll
  for (int k = 0; k < PerLane; ++k) {
    const int c = lane + 32 * k;
    const float d = c < width ? v[k] - mean : 0.0f;
    squares += d * d;
  }
  const float rstd = rsqrtf(warp_sum(squares) / static_cast<float>(width) + eps);
  Out* yr = y + row * width;
#pragma unroll
  for (int k = 0; k < PerLane; ++k) {
    const int c = lane + 32 * k;
    if (c < width) yr[c] = from_float<Out>((v[k] - mean) * rstd * gamma[c] + beta[c]);
  }
  if (lane == 0) {
    mean_out[row] = mean;
    rstd_out[row] = rstd;
  }
}

template <typename Grad, typename In, int PerLane>
__global__ void __launch_bounds__(kThreads)
    layer_norm_backward_kernel(const Grad* __restrict__ dy, const In* __restrict__ x,
                               const float* __restrict__ mean, const float* __restrict__ rstd,
                               const float* __restrict__ gamma, int64_t rows, int width,
                               In* __restrict__ dx, float* __restrict__ partial_dgamma,
                               float* __restrict__ partial_dbeta) {
  const int lane = static_cast<int>(threadIdx.x % 32);
  const int warp = static_cast<int>(threadIdx.x / 32);
  const float inv_width = 1.0f / static_cast<float>(width);
  float g[PerLane], dgamma[PerLane], dbeta[PerLane];
#pragma unroll
  for (int k = 0; k < PerLane; ++k) {
    const int c = lane + 32 * k;
    g[k] = c < width ? gamma[c] : 0.0f;
    dgamma[k] = 0.0f;
    dbeta[k] = 0.0f;
  }
  const int64_t row_stride = static_cast<int64_t>(gridDim.x) * kWarps;
  for (int64_t row = static_cast<int64_t>(blockIdx.x) * kWarps + warp; row < rows;
       row += row_stride) {
    const float mu = mean[row];
    const float rs = rstd[row];
    const Grad* dyr = dy + row * width;
    const In* xr = x + row * width;
    float xhat[PerLane], gdy[PerLane];
    float sum_gdy = 0.0f, sum_gdy_xhat = 0.0f;
#pragma unroll
    for (int k = 0; k < PerLane; ++k) {
      const int c = lane + 32 * k;
      if (c < width) {
        const float d = to_float(dyr[c]);
        xhat[k] = (to_float(xr[c]) - mu) * rs;
        dgamma[k] += d * xhat[k];
        dbeta[k] += d;
        gdy[k] = d * g[k];
      } else {
        xhat[k] = 0.0f;
        gdy[k] = 0.0f;
      }
      sum_gdy += gdy[k];
      sum_gdy_xhat += gdy[k] * xhat[k];
    }
    const float mean_gdy = warp_sum(sum_gdy) * inv_width;
    const float mean_gdy_xhat = warp_sum(sum_gdy_xhat) * inv_width;
    In* dxr = dx + row * width;
#pragma unroll
    for (int k = 0; k < PerLane; ++k) {
      const int c = lane + 32 * k;
      if (c < width) dxr[c] = from_float<In>(rs * (gdy[k] - mean_gdy - xhat[k] * mean_gdy_xhat));
    }
  }
  // The block's partial sums, added warp by warp in a fixed order (deterministic).
  extern __shared__ float shared[];
  float* block_dgamma = shared;
  float* block_dbeta = shared + width;
  for (int c = static_cast<int>(threadIdx.x); c < width; c += kThreads) {
    block_dgamma[c] = 0.0f;
    block_dbeta[c] = 0.0f;
  }
  __syncthreads();
  for (int w = 0; w < kWarps; ++w) {
    if (warp == w) {
#pragma unroll
      for (int k = 0; k < PerLane; ++k) {
        const int c = lane + 32 * k;
        if (c < width) {
          block_dgamma[c] += dgamma[k];
          block_dbeta[c] += dbeta[k];
        }
      }
    }
    __syncthreads();
  }
  const int64_t out = static_cast<int64_t>(blockIdx.x) * width;
  for (int c = static_cast<int>(threadIdx.x); c < width; c += kThreads) {
    partial_dgamma[out + c] = block_dgamma[c];
    partial_dbeta[out + c] = block_dbeta[c];
  }
}

// Registers per lane for a row of `width` values: the smallest of 8, 16, 32 that holds it.
template <typename F>
void with_per_lane(int width, F&& launch) {
  if (width <= 32 * 8) {
    launch(std::integral_constant<int, 8>{});
  } else if (width <= 32 * 16) {
    launch(std::integral_constant<int, 16>{});
  } else {
    launch(std::integral_constant<int, 32>{});
  }
}

void check_width(int width) {
  if (width < 1 || width > kLayerNormMaxWidth) {
    throw std::invalid_argument("layer_norm kernels: width " + std::to_string(width) +
                                " outside 1.." + std::to_string(kLayerNormMaxWidth));
  }
}

}  // namespace

void layer_norm_forward(const void* x, DType x_dtype, const float* gamma, const float* beta,
                        int64_t rows, int width, float eps, void* y, DType y_dtype, float* mean,
                        float* rstd, cudaStream_t stream) {
  check_width(width);
  if (rows == 0) return;
  const auto blocks = static_cast<unsigned>((rows + kWarps - 1) / kWarps);
  with_dtype(x_dtype, [&](auto in_tag) {
    using In = decltype(in_tag);
    with_dtype(y_dtype, [&](auto out_tag) {
      using Out = decltype(out_tag);
      with_per_lane(width, [&](auto per_lane) {
        constexpr int PerLane = decltype(per_lane)::value;
        layer_norm_forward_kernel<In, Out, PerLane>
            <<<blocks, kThreads, 0, stream>>>(static_cast<const In*>(x), gamma, beta, rows, width,
                                              eps, static_cast<Out*>(y), mean, rstd);
      });
    });
  });
  check(cudaGetLastError(), "layer_norm_forward launch");
}

int64_t layer_norm_partial_blocks(int64_t rows) {
  return std::clamp<int64_t>((rows + kWarps - 1) / kWarps, 1, kMaxPartialBlocks);
}

void layer_norm_backward(const void* dy, DType dy_dtype, const void* x, DType x_dtype,
                         const float* mean, const float* rstd, const float* gamma, int64_t rows,
                         int width, void* dx, float* partial_dgamma, float* partial_dbeta,
                         cudaStream_t stream) {
  check_width(width);
  const auto blocks = static_cast<unsigned>(layer_norm_partial_blocks(rows));
  const size_t shared = 2 * sizeof(float) * static_cast<size_t>(width);
  with_dtype(dy_dtype, [&](auto grad_tag) {
    using Grad = decltype(grad_tag);
    with_dtype(x_dtype, [&](auto in_tag) {
      using In = decltype(in_tag);
      with_per_lane(width, [&](auto per_lane) {
        constexpr int PerLane = decltype(per_lane)::value;
        layer_norm_backward_kernel<Grad, In, PerLane><<<blocks, kThreads, shared, stream>>>(
            static_cast<const Grad*>(dy), static_cast<const In*>(x), mean, rstd, gamma, rows, width,
            static_cast<In*>(dx), partial_dgamma, partial_dbeta);
      });
    });
  });
  check(cudaGetLastError(), "layer_norm_backward launch");
}

}  // namespace exfusion::cuda
