// CUDA kernels of an expert bank: the weighted sum of N experts written straight in the
// GEMM's input dtype, the fusion-weight gradient <E_i, dW̄>, and AdamW over all N experts
// from the one fused-weight gradient. Each is a single memory-bound pass; the ATen
// references they are tested against are in expert_kernels.cpp.
#include <algorithm>
#include <cmath>
#include <type_traits>

#include "../util/cuda_numeric.cuh"
#include "expert_kernels_cuda.h"

namespace exfusion::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kMaxBlocks = 2048;
// Experts whose partial dot products one block accumulates in registers at a time.
constexpr int kExpertsPerPass = 8;
constexpr int kMaxPartialBlocks = 512;

// Vec consecutive float32 values; one 16-byte load when Vec is 4 (callers guarantee alignment).
template <int Vec>
__device__ __forceinline__ void load_floats(const float* p, float (&out)[Vec]) {
  if constexpr (Vec == 4) {
    const float4 v = *reinterpret_cast<const float4*>(p);
    out[0] = v.x;
    out[1] = v.y;
    out[2] = v.z;
    out[3] = v.w;
  } else {
#pragma unroll
    for (int k = 0; k < Vec; ++k) out[k] = p[k];
  }
}

template <int Vec>
__device__ __forceinline__ void store_floats(float* p, const float (&in)[Vec]) {
  if constexpr (Vec == 4) {
    *reinterpret_cast<float4*>(p) = make_float4(in[0], in[1], in[2], in[3]);
  } else {
#pragma unroll
    for (int k = 0; k < Vec; ++k) p[k] = in[k];
  }
}

template <typename T, int Vec>
__device__ __forceinline__ void load_any(const T* p, float (&out)[Vec]) {
  if constexpr (std::is_same_v<T, float>) {
    load_floats<Vec>(p, out);
  } else {
#pragma unroll
    for (int k = 0; k < Vec; ++k) out[k] = to_float(p[k]);
  }
}

int grid_for(int64_t numel, int vec, int max_blocks) {
  const int64_t per_block = static_cast<int64_t>(kThreads) * vec;
  return static_cast<int>(
      std::max<int64_t>(1, std::min<int64_t>((numel + per_block - 1) / per_block, max_blocks)));
}

template <typename Out, int Vec>
__global__ void mix_experts_kernel(const float* __restrict__ experts,
                                   const float* __restrict__ coeffs, int num_experts, int64_t numel,
                                   Out* __restrict__ out) {
  extern __shared__ float shared_coeffs[];
  for (int i = threadIdx.x; i < num_experts; i += blockDim.x) shared_coeffs[i] = coeffs[i];
  __syncthreads();
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x * Vec;
  for (int64_t j = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) * Vec; j < numel;
       j += stride) {
    float acc[Vec] = {};
    for (int i = 0; i < num_experts; ++i) {
      float e[Vec];
      load_floats<Vec>(experts + i * numel + j, e);
      const float c = shared_coeffs[i];
#pragma unroll
      for (int k = 0; k < Vec; ++k) acc[k] = fmaf(c, e[k], acc[k]);
    }
#pragma unroll
    for (int k = 0; k < Vec; ++k) out[j + k] = from_float<Out>(acc[k]);
  }
}

template <typename Grad, int Vec>
__global__ void coefficient_partials_kernel(const float* __restrict__ experts,
                                            const Grad* __restrict__ grad, int num_experts,
                                            int64_t numel, float* __restrict__ partials) {
  const int first = blockIdx.y * kExpertsPerPass;
  const int count = min(kExpertsPerPass, num_experts - first);
  float acc[kExpertsPerPass] = {};
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x * Vec;
  for (int64_t j = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) * Vec; j < numel;
       j += stride) {
    float g[Vec];
    load_any<Grad, Vec>(grad + j, g);
#pragma unroll
    for (int e = 0; e < kExpertsPerPass; ++e) {
      if (e < count) {
        float w[Vec];
        load_floats<Vec>(experts + (first + e) * numel + j, w);
#pragma unroll
        for (int k = 0; k < Vec; ++k) acc[e] = fmaf(w[k], g[k], acc[e]);
      }
    }
  }
  // Block reduction: shuffles within each warp, then the warps' sums through shared memory.
  __shared__ float warp_sums[kExpertsPerPass][kThreads / 32];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
#pragma unroll
  for (int e = 0; e < kExpertsPerPass; ++e) {
    const float v = warp_sum(acc[e]);
    if (lane == 0) warp_sums[e][warp] = v;
  }
  __syncthreads();
  if (threadIdx.x < count) {
    float total = 0.0f;
    for (int w = 0; w < kThreads / 32; ++w) total += warp_sums[threadIdx.x][w];
    partials[static_cast<int64_t>(first + threadIdx.x) * gridDim.x + blockIdx.x] = total;
  }
}

template <typename Grad, int Vec>
__global__ void factored_adamw_kernel(FactoredAdamWArgs args) {
  extern __shared__ float shared_coeffs[];
  for (int i = threadIdx.x; i < args.num_experts; i += blockDim.x) {
    shared_coeffs[i] = args.coeffs[i];
  }
  __syncthreads();
  // As PyTorch's fused AdamW (fused_adam_utils.cuh): bias corrections in float32 from the
  // float32 step count.
  const float step = *args.step;
  const float bias_correction1 = 1.0f - powf(args.beta1, step);
  const float bias_correction2_sqrt = sqrtf(1.0f - powf(args.beta2, step));
  const float lr = args.lr_on_device != nullptr ? *args.lr_on_device : args.lr;
  const float step_size = lr / bias_correction1;
  const float scale = args.grad_scale != nullptr ? *args.grad_scale : 1.0f;
  const float decay = 1.0f - lr * args.weight_decay;
  const auto* grad = static_cast<const Grad*>(args.grad);
  const int64_t numel = args.numel;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x * Vec;
  for (int64_t j = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) * Vec; j < numel;
       j += stride) {
    float g[Vec];
    load_any<Grad, Vec>(grad + j, g);
#pragma unroll
    for (int k = 0; k < Vec; ++k) g[k] *= scale;
    for (int i = 0; i < args.num_experts; ++i) {
      const int64_t at = i * numel + j;
      float p[Vec], m[Vec], v[Vec];
      load_floats<Vec>(args.params + at, p);
      load_floats<Vec>(args.exp_avg + at, m);
      load_floats<Vec>(args.exp_avg_sq + at, v);
      const float c = shared_coeffs[i];
#pragma unroll
      for (int k = 0; k < Vec; ++k) {
        const float gi = c * g[k];
        p[k] *= decay;
        m[k] = args.beta1 * m[k] + (1.0f - args.beta1) * gi;
        v[k] = args.beta2 * v[k] + (1.0f - args.beta2) * gi * gi;
        const float denom = sqrtf(v[k]) / bias_correction2_sqrt + args.eps;
        p[k] -= step_size * m[k] / denom;
      }
      store_floats<Vec>(args.params + at, p);
      store_floats<Vec>(args.exp_avg + at, m);
      store_floats<Vec>(args.exp_avg_sq + at, v);
    }
  }
}

// float4 loads need every expert's row start 16-byte aligned: numel a multiple of 4 (the
// base pointers come from the caching allocator, which aligns to 512 bytes).
bool vectorizable(int64_t numel, const void* a, const void* b) {
  return numel % 4 == 0 && reinterpret_cast<uintptr_t>(a) % 16 == 0 &&
         reinterpret_cast<uintptr_t>(b) % 16 == 0;
}

template <typename F>
void with_vec(bool vec4, F&& launch) {
  if (vec4) {
    launch(std::integral_constant<int, 4>{});
  } else {
    launch(std::integral_constant<int, 1>{});
  }
}

}  // namespace

void mix_experts(const float* experts, const float* coeffs, int64_t num_experts, int64_t numel,
                 void* out, DType out_dtype, cudaStream_t stream) {
  if (numel == 0) return;
  const bool vec4 = vectorizable(numel, experts, experts);
  const size_t shared = sizeof(float) * static_cast<size_t>(num_experts);
  with_dtype(out_dtype, [&](auto tag) {
    using Out = decltype(tag);
    with_vec(vec4, [&](auto vec) {
      constexpr int Vec = decltype(vec)::value;
      mix_experts_kernel<Out, Vec><<<grid_for(numel, Vec, kMaxBlocks), kThreads, shared, stream>>>(
          experts, coeffs, static_cast<int>(num_experts), numel, static_cast<Out*>(out));
    });
  });
  check(cudaGetLastError(), "mix_experts launch");
}

int64_t coefficient_partial_blocks(int64_t numel) { return grid_for(numel, 4, kMaxPartialBlocks); }

void mix_coefficient_partials(const float* experts, const void* grad, DType grad_dtype,
                              int64_t num_experts, int64_t numel, float* partials,
                              cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(coefficient_partial_blocks(numel)),
                  static_cast<unsigned>((num_experts + kExpertsPerPass - 1) / kExpertsPerPass));
  const bool vec4 =
      vectorizable(numel, experts, grad) && (grad_dtype == DType::kFloat32 || numel % 4 == 0);
  with_dtype(grad_dtype, [&](auto tag) {
    using Grad = decltype(tag);
    with_vec(vec4, [&](auto vec) {
      constexpr int Vec = decltype(vec)::value;
      coefficient_partials_kernel<Grad, Vec><<<grid, kThreads, 0, stream>>>(
          experts, static_cast<const Grad*>(grad), static_cast<int>(num_experts), numel, partials);
    });
  });
  check(cudaGetLastError(), "mix_coefficient_partials launch");
}

void factored_adamw(const FactoredAdamWArgs& args, cudaStream_t stream) {
  if (args.numel == 0) return;
  const bool vec4 = vectorizable(args.numel, args.params, args.exp_avg) &&
                    vectorizable(args.numel, args.exp_avg_sq, args.grad);
  const size_t shared = sizeof(float) * static_cast<size_t>(args.num_experts);
  with_dtype(args.grad_dtype, [&](auto tag) {
    using Grad = decltype(tag);
    with_vec(vec4, [&](auto vec) {
      constexpr int Vec = decltype(vec)::value;
      factored_adamw_kernel<Grad, Vec>
          <<<grid_for(args.numel, Vec, kMaxBlocks), kThreads, shared, stream>>>(args);
    });
  });
  check(cudaGetLastError(), "factored_adamw launch");
}

}  // namespace exfusion::cuda
