// The element types the custom CUDA kernels read and write, named without LibTorch's headers
// because nvcc compiles the kernels without them (kernel_dtype.h maps ScalarType onto these).
#pragma once

namespace exfusion::cuda {

enum class DType { kFloat32, kBFloat16, kFloat16 };

}  // namespace exfusion::cuda
