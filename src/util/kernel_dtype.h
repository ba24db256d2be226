// ScalarType → cuda::DType, for the host wrappers that check tensors and call the custom
// CUDA kernels.
#pragma once
#include <c10/core/ScalarType.h>
#include <c10/util/Exception.h>

#include "cuda_dtype.h"

namespace exfusion {

inline bool has_kernel_dtype(c10::ScalarType type) {
  return type == c10::kFloat || type == c10::kBFloat16 || type == c10::kHalf;
}

inline cuda::DType kernel_dtype(c10::ScalarType type) {
  switch (type) {
    case c10::kFloat:
      return cuda::DType::kFloat32;
    case c10::kBFloat16:
      return cuda::DType::kBFloat16;
    case c10::kHalf:
      return cuda::DType::kFloat16;
    default:
      TORCH_CHECK(false, "custom CUDA kernels: unsupported dtype ", type);
  }
}

}  // namespace exfusion
