// Host entry points of the expert-bank CUDA kernels (expert_kernels.cu). Plain pointers and
// a stream, no LibTorch types, so nvcc compiles the kernels without LibTorch's headers;
// expert_kernels.cpp checks shapes and dtypes and calls these.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

#include "../util/cuda_dtype.h"

namespace exfusion::cuda {

// out[j] = Σ_i coeffs[i] · experts[i·numel + j], accumulated in float32, stored as `out_dtype`.
void mix_experts(const float* experts, const float* coeffs, int64_t num_experts, int64_t numel,
                 void* out, DType out_dtype, cudaStream_t stream);

// Number of blocks (columns of `partials`) mix_coefficient_partials uses for `numel`.
int64_t coefficient_partial_blocks(int64_t numel);

// partials[i · blocks + b] = block b's share of Σ_j experts[i·numel + j] · grad[j]; the caller
// sums each row (in a fixed order, so the result is deterministic).
void mix_coefficient_partials(const float* experts, const void* grad, DType grad_dtype,
                              int64_t num_experts, int64_t numel, float* partials,
                              cudaStream_t stream);

// AdamW (PyTorch's formulation, decoupled weight decay) on all N experts where expert i's
// gradient is coeffs[i] · grad_scale · grad: the N gradients are never stored. `step`,
// `grad_scale` and `lr_on_device` live on the device (grad_scale may be null: 1;
// lr_on_device may be null: `lr`). A learning rate read from the device lets a captured CUDA
// graph follow the schedule.
struct FactoredAdamWArgs {
  float* params;
  float* exp_avg;
  float* exp_avg_sq;
  const void* grad;
  DType grad_dtype;
  const float* coeffs;
  const float* step;
  const float* grad_scale;
  const float* lr_on_device;
  int64_t num_experts;
  int64_t numel;
  float lr, beta1, beta2, weight_decay, eps;
};
void factored_adamw(const FactoredAdamWArgs& args, cudaStream_t stream);

}  // namespace exfusion::cuda
