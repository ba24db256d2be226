// Host entry points of the LayerNorm CUDA kernels (layer_norm_kernels.cu): plain pointers and
// a stream, no LibTorch types, so nvcc compiles them without LibTorch's headers;
// layer_norm.cpp checks the tensors and calls these.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

#include "../util/cuda_dtype.h"

namespace exfusion::cuda {

// One warp holds a row in registers: widths up to this many values.
constexpr int kLayerNormMaxWidth = 1024;

// y = (x - mean) · rstd · gamma + beta per row of `width` values, statistics in float32
// (two passes over the row held in registers), y stored as `y_dtype`; mean and rstd
// ([rows] float32) are kept for the backward pass.
void layer_norm_forward(const void* x, DType x_dtype, const float* gamma, const float* beta,
                        int64_t rows, int width, float eps, void* y, DType y_dtype, float* mean,
                        float* rstd, cudaStream_t stream);

// Rows of partial sums layer_norm_backward writes (one per block).
int64_t layer_norm_partial_blocks(int64_t rows);

// dx (stored as x's dtype) and, per block b, partial_dgamma[b · width + c] = Σ dy·x̂ and
// partial_dbeta[b · width + c] = Σ dy over the block's rows, in one pass over dy and x; the
// caller sums the partial rows (in a fixed order, so the result is deterministic).
void layer_norm_backward(const void* dy, DType dy_dtype, const void* x, DType x_dtype,
                         const float* mean, const float* rstd, const float* gamma, int64_t rows,
                         int width, void* dx, float* partial_dgamma, float* partial_dbeta,
                         cudaStream_t stream);

}  // namespace exfusion::cuda
