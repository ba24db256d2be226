// The weight-gradient GEMM with cuBLASLt's bias-gradient epilogue (see cublaslt_weight_grad.h),
// on ATen's cuBLASLt handle and workspace so that it shares them with LibTorch's own GEMMs and
// can be captured in a CUDA graph.
#include "cublaslt_weight_grad.h"

#include <ATen/Context.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <cublasLt.h>

#include <cstdint>
#include <memory>
#include <type_traits>

namespace exfusion::cuda {
namespace {

void check(cublasStatus_t status, const char* what) {
  TORCH_CHECK(status == CUBLAS_STATUS_SUCCESS, "cuBLASLt weight gradient: ", what,
              " failed: ", cublasLtGetStatusString(status));
}

cudaDataType_t cuda_data_type(c10::ScalarType type) {
  switch (type) {
    case c10::kFloat:
      return CUDA_R_32F;
    case c10::kBFloat16:
      return CUDA_R_16BF;
    case c10::kHalf:
      return CUDA_R_16F;
    default:
      TORCH_CHECK(false, "cuBLASLt weight gradient: unsupported dtype ", type);
  }
}

// The largest power of two up to 256 that divides the address: what cuBLASLt's heuristic
// needs to pick vectorised kernels only where the operands allow them.
uint32_t alignment_bytes(const void* pointer) {
  const auto address = reinterpret_cast<std::uintptr_t>(pointer);
  uint32_t alignment = 256;
  while (alignment > 1 && address % alignment != 0) alignment /= 2;
  return alignment;
}

template <typename Handle, cublasStatus_t (*Destroy)(Handle)>
struct Destroyer {
  void operator()(Handle handle) const { Destroy(handle); }
};
template <typename Handle, cublasStatus_t (*Destroy)(Handle)>
using Owned = std::unique_ptr<std::remove_pointer_t<Handle>, Destroyer<Handle, Destroy>>;
using MatmulDesc = Owned<cublasLtMatmulDesc_t, cublasLtMatmulDescDestroy>;
using Layout = Owned<cublasLtMatrixLayout_t, cublasLtMatrixLayoutDestroy>;
using Preference = Owned<cublasLtMatmulPreference_t, cublasLtMatmulPreferenceDestroy>;

// A column-major rows × cols matrix with leading dimension `ld`.
Layout make_layout(cudaDataType_t type, int64_t rows, int64_t cols, int64_t ld) {
  cublasLtMatrixLayout_t layout = nullptr;
  check(cublasLtMatrixLayoutCreate(&layout, type, static_cast<uint64_t>(rows),
                                   static_cast<uint64_t>(cols), ld),
        "matrix layout");
  return Layout(layout);
}

template <typename T>
void set(cublasLtMatmulDesc_t desc, cublasLtMatmulDescAttributes_t attribute, const T& value) {
  check(cublasLtMatmulDescSetAttribute(desc, attribute, &value, sizeof(value)), "matmul attribute");
}

template <typename T>
void set(cublasLtMatmulPreference_t preference, cublasLtMatmulPreferenceAttributes_t attribute,
         const T& value) {
  check(cublasLtMatmulPreferenceSetAttribute(preference, attribute, &value, sizeof(value)),
        "matmul preference");
}

}  // namespace

bool linear_weight_bias_grad_cublaslt(const at::Tensor& dy, const at::Tensor& x,
                                      const at::Tensor& dweight, const at::Tensor& dbias) {
  TORCH_CHECK(dy.is_cuda() && dy.dim() == 2 && x.dim() == 2 && dy.size(0) == x.size(0) &&
                  dy.size(0) > 0 && dy.is_contiguous() && x.is_contiguous() &&
                  dy.scalar_type() == x.scalar_type(),
              "cuBLASLt weight gradient: expected contiguous dy [rows, out] and x [rows, in] of "
              "one dtype, got ",
              dy.sizes(), " and ", x.sizes());
  const int64_t rows = x.size(0);
  const int64_t in = x.size(1);
  const int64_t out = dy.size(1);
  TORCH_CHECK(dweight.sizes() == at::IntArrayRef({out, in}) && dweight.is_contiguous() &&
                  dbias.sizes() == at::IntArrayRef({out}) &&
                  dbias.scalar_type() == dweight.scalar_type(),
              "cuBLASLt weight gradient: outputs of shape ", dweight.sizes(), " and ",
              dbias.sizes(), " for ", out, " × ", in);
  const c10::cuda::CUDAGuard guard(x.device());
  const auto input_type = cuda_data_type(x.scalar_type());
  const auto output_type = cuda_data_type(dweight.scalar_type());
  // float32 inputs follow LibTorch's TF32 setting, as its own GEMMs do.
  const auto compute_type = x.scalar_type() == c10::kFloat && at::globalContext().allowTF32CuBLAS()
                                ? CUBLAS_COMPUTE_32F_FAST_TF32
                                : CUBLAS_COMPUTE_32F;

  // Row-major x [rows, in] is column-major in × rows, dy is out × rows and dW [out, in] is
  // in × out: dWᵀ = x_cm · dy_cmᵀ, an (m, n, k) = (in, out, rows) GEMM whose B operand is dy,
  // so BGRADB's sum over k of op(B)'s columns is db.
  cublasLtMatmulDesc_t raw_desc = nullptr;
  check(cublasLtMatmulDescCreate(&raw_desc, compute_type, CUDA_R_32F), "matmul descriptor");
  const MatmulDesc desc(raw_desc);
  set(desc.get(), CUBLASLT_MATMUL_DESC_TRANSA, CUBLAS_OP_N);
  set(desc.get(), CUBLASLT_MATMUL_DESC_TRANSB, CUBLAS_OP_T);
  set(desc.get(), CUBLASLT_MATMUL_DESC_EPILOGUE, CUBLASLT_EPILOGUE_BGRADB);
  set(desc.get(), CUBLASLT_MATMUL_DESC_BIAS_POINTER, dbias.data_ptr());
  const auto a_layout = make_layout(input_type, in, rows, in);
  const auto b_layout = make_layout(input_type, out, rows, out);
  const auto d_layout = make_layout(output_type, in, out, in);

  cublasLtMatmulPreference_t raw_preference = nullptr;
  check(cublasLtMatmulPreferenceCreate(&raw_preference), "matmul preference");
  const Preference preference(raw_preference);
  const size_t workspace_bytes = at::cuda::getCUDABlasLtWorkspaceSize();
  set(preference.get(), CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, workspace_bytes);
  if (dweight.scalar_type() != c10::kFloat) {
    // The row count (k) is long and the output small, which invites split-K; partial sums
    // added in a 16-bit output would each be rounded. Only float32 partial sums are allowed.
    set(preference.get(), CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK,
        static_cast<uint32_t>(CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE));
  }
  set(preference.get(), CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, alignment_bytes(x.data_ptr()));
  set(preference.get(), CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, alignment_bytes(dy.data_ptr()));
  set(preference.get(), CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES,
      alignment_bytes(dweight.data_ptr()));
  set(preference.get(), CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES,
      alignment_bytes(dweight.data_ptr()));

  const auto handle = at::cuda::getCurrentCUDABlasLtHandle();
  cublasLtMatmulHeuristicResult_t heuristic = {};
  int found = 0;
  const auto status = cublasLtMatmulAlgoGetHeuristic(handle, desc.get(), a_layout.get(),
                                                     b_layout.get(), d_layout.get(), d_layout.get(),
                                                     preference.get(), 1, &heuristic, &found);
  // Only "no algorithm" is a fallback; any other status is a mistake in the call, not a gap.
  if (status == CUBLAS_STATUS_NOT_SUPPORTED || (status == CUBLAS_STATUS_SUCCESS && found == 0)) {
    return false;
  }
  check(status, "matmul heuristic");

  const float alpha = 1.0F;
  const float beta = 0.0F;
  check(
      cublasLtMatmul(handle, desc.get(), &alpha, x.data_ptr(), a_layout.get(), dy.data_ptr(),
                     b_layout.get(), &beta, dweight.data_ptr(), d_layout.get(), dweight.data_ptr(),
                     d_layout.get(), &heuristic.algo, at::cuda::getCUDABlasLtWorkspace(),
                     workspace_bytes, at::cuda::getCurrentCUDAStream()),
      "matmul");
  return true;
}

}  // namespace exfusion::cuda
