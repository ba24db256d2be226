// A linear layer's weight and bias gradients from one cuBLASLt GEMM: dW = dyᵀ x, with the
// BGRADB epilogue summing dy over rows into db while the GEMM reads it anyway. linear.cpp
// calls it on CUDA and falls back to reference::linear_weight_bias_grad where it declines.
#pragma once
#include <ATen/core/Tensor.h>

namespace exfusion::cuda {

// Writes dweight [out, in] and dbias [out] (one dtype: float32, bf16 or float16) from dy
// [rows, out] and x [rows, in] (row-major contiguous, one dtype of the same three; rows > 0),
// on the current stream. Returns false, having written nothing, where cuBLASLt offers no
// algorithm for these shapes, dtypes and alignments; throws on any other cuBLASLt error.
bool linear_weight_bias_grad_cublaslt(const at::Tensor& dy, const at::Tensor& x,
                                      const at::Tensor& dweight, const at::Tensor& dbias);

}  // namespace exfusion::cuda
