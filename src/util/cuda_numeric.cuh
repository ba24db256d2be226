// Device-side helpers shared by the custom CUDA kernels: conversions between float32 and the
// storage types, warp sums, a launch-error check and a dispatch from DType to a C++ type.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <stdexcept>
#include <string>

#include "cuda_dtype.h"

namespace exfusion::cuda {

inline void check(cudaError_t status, const char* what) {
  if (status != cudaSuccess) {
    throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(status));
  }
}

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }

template <typename T>
__device__ __forceinline__ T from_float(float v);
template <>
__device__ __forceinline__ float from_float<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}
template <>
__device__ __forceinline__ __half from_float<__half>(float v) {
  return __float2half_rn(v);
}

// Sum over the 32 lanes of a warp, the result in every lane (a fixed butterfly order, so
// the result is deterministic).
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// Calls launch(T{}) with T the C++ type of `dtype`.
template <typename F>
void with_dtype(DType dtype, F&& launch) {
  switch (dtype) {
    case DType::kFloat32:
      launch(float{});
      return;
    case DType::kBFloat16:
      launch(__nv_bfloat16{});
      return;
    case DType::kFloat16:
      launch(__half{});
      return;
  }
  // A DType cast from an integer outside the enumerators would otherwise launch nothing.
  throw std::invalid_argument("custom CUDA kernels: unknown DType " +
                              std::to_string(static_cast<int>(dtype)));
}

}  // namespace exfusion::cuda
