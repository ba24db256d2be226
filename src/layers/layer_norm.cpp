// LayerNorm through the CUDA kernels where they apply, LibTorch's elsewhere, and the ATen
// reference the kernels are tested against, and the LayerNorm module (see layer_norm.h).
#include "exfusion/layers/layer_norm.h"

#include <torch/nn/init.h>

#include <vector>

#include "exfusion/util/autocast.h"
#include "exfusion/util/fast_paths.h"

#ifdef EXFUSION_WITH_CUDA_KERNELS
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/csrc/autograd/custom_function.h>

#include "../util/kernel_dtype.h"
#include "layer_norm_kernels_cuda.h"
#endif

namespace exfusion {
namespace {

#ifdef EXFUSION_WITH_CUDA_KERNELS
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

struct FusedLayerNorm : public torch::autograd::Function<FusedLayerNorm> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x,
                               const torch::Tensor& gamma, const torch::Tensor& beta, double eps,
                               c10::ScalarType out_dtype) {
    const c10::cuda::CUDAGuard guard(x.device());
    const int64_t width = x.size(-1);
    const int64_t rows = x.numel() / width;
    const auto x2 = x.contiguous().view({rows, width});
    const auto g = gamma.contiguous();
    const auto b = beta.contiguous();
    // Allocated in x's shape rather than viewed into it: autograd refuses in-place ops on views
    // made inside a custom function.
    auto y = torch::empty(x.sizes(), x.options().dtype(out_dtype));
    auto mean = torch::empty({rows}, x.options().dtype(torch::kFloat32));
    auto rstd = torch::empty_like(mean);
    cuda::layer_norm_forward(x2.data_ptr(), kernel_dtype(x2.scalar_type()), g.data_ptr<float>(),
                             b.data_ptr<float>(), rows, static_cast<int>(width),
                             static_cast<float>(eps), y.data_ptr(), kernel_dtype(out_dtype),
                             mean.data_ptr<float>(), rstd.data_ptr<float>(),
                             at::cuda::getCurrentCUDAStream());
    ctx->save_for_backward({x2, g, mean, rstd});
    ctx->saved_data["sizes"] = x.sizes().vec();
    return y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto& x2 = saved[0];
    const auto& gamma = saved[1];
    const auto& mean = saved[2];
    const auto& rstd = saved[3];
    const c10::cuda::CUDAGuard guard(x2.device());
    const int64_t rows = x2.size(0);
    const int64_t width = x2.size(1);
    const auto dy = grads[0].contiguous().view({rows, width});
    auto dx = torch::empty(ctx->saved_data["sizes"].toIntVector(), x2.options());
    auto partials = torch::empty({2, cuda::layer_norm_partial_blocks(rows), width},
                                 x2.options().dtype(torch::kFloat32));
    cuda::layer_norm_backward(dy.data_ptr(), kernel_dtype(dy.scalar_type()), x2.data_ptr(),
                              kernel_dtype(x2.scalar_type()), mean.data_ptr<float>(),
                              rstd.data_ptr<float>(), gamma.data_ptr<float>(), rows,
                              static_cast<int>(width), dx.data_ptr(), partials[0].data_ptr<float>(),
                              partials[1].data_ptr<float>(), at::cuda::getCurrentCUDAStream());
    const auto sums = partials.sum(1);
    return {dx, sums[0], sums[1], torch::Tensor(), torch::Tensor()};
  }
};

// The kernels cover the ViT's norms on CUDA: one normalised dimension of at most
// kLayerNormMaxWidth values, float32 gamma and beta (both defined: an affine norm) beside the
// input. Decided here, in the forward: FusedLayerNorm's backward follows that decision.
bool use_kernels(const torch::Tensor& x, at::IntArrayRef normalized_shape,
                 const torch::Tensor& weight, const torch::Tensor& bias) {
  if (!FastPathScope::policy().layer_norm_kernels || !x.is_cuda() || x.dim() < 1 ||
      x.numel() == 0) {
    return false;
  }
  const int64_t width = x.size(-1);
  const bool covered =
      normalized_shape.size() == 1 && weight.defined() && bias.defined() &&
      width == normalized_shape[0] && width <= cuda::kLayerNormMaxWidth &&
      has_kernel_dtype(x.scalar_type()) && has_kernel_dtype(autocast_compute_dtype(x)) &&
      weight.scalar_type() == torch::kFloat32 && bias.scalar_type() == torch::kFloat32 &&
      weight.device() == x.device() && bias.device() == x.device();
  count_fast_path_call(FastPath::kLayerNormKernels, covered);
  return covered;
}
#endif

c10::ScalarType statistics_dtype(const torch::Tensor& x) {
  return x.scalar_type() == torch::kFloat64 ? torch::kFloat64 : torch::kFloat32;
}

// Both the torch::nn::LayerNorm overload and LayerNormImpl::forward.
torch::Tensor dispatch_layer_norm(const torch::Tensor& x, at::IntArrayRef normalized_shape,
                                  const torch::Tensor& weight, const torch::Tensor& bias,
                                  double eps) {
#ifdef EXFUSION_WITH_CUDA_KERNELS
  if (use_kernels(x, normalized_shape, weight, bias)) {
    // Under autocast the next GEMM reads bf16: write that instead of float32 plus a cast.
    return FusedLayerNorm::apply(x, weight, bias, eps, autocast_compute_dtype(x));
  }
#endif
  // What torch::nn::LayerNormImpl::forward runs (it is not callable through a const holder).
  return at::layer_norm(x, normalized_shape, weight, bias, eps);
}

}  // namespace

torch::Tensor layer_norm(const torch::Tensor& x, const torch::nn::LayerNorm& norm) {
  return dispatch_layer_norm(x, norm->options.normalized_shape(), norm->weight, norm->bias,
                             norm->options.eps());
}

LayerNormImpl::LayerNormImpl(const LayerNormOptions& options) : options(options) { reset(); }

void LayerNormImpl::reset() {
  weight = register_parameter("weight", torch::empty({options.normalized_dim()}));
  bias = register_parameter("bias", torch::empty({options.normalized_dim()}));
  reset_parameters();
}

void LayerNormImpl::reset_parameters() {
  torch::nn::init::ones_(weight);
  torch::nn::init::zeros_(bias);
}

void LayerNormImpl::pretty_print(std::ostream& stream) const {
  stream << "exfusion::LayerNorm(" << options.normalized_dim() << ", eps=" << options.eps() << ")";
}

torch::Tensor LayerNormImpl::forward(const torch::Tensor& x) {
  return dispatch_layer_norm(x, {options.normalized_dim()}, weight, bias, options.eps());
}

// The references compute in float32 (float64 for float64 input) even inside an autocast region.
namespace reference {

std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> layer_norm_forward(
    const torch::Tensor& x, const torch::Tensor& gamma, const torch::Tensor& beta, double eps,
    torch::ScalarType out_dtype) {
  const NoAutocast no_autocast;
  const auto dtype = statistics_dtype(x);
  const auto xf = x.to(dtype);
  const auto mean = xf.mean(-1, /*keepdim=*/true);
  const auto centered = xf - mean;
  const auto rstd = (centered.square().mean(-1, /*keepdim=*/true) + eps).rsqrt();
  const auto y = (centered * rstd * gamma.to(dtype) + beta.to(dtype)).to(out_dtype);
  return {y, mean.reshape({-1}), rstd.reshape({-1})};
}

std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> layer_norm_backward(
    const torch::Tensor& dy, const torch::Tensor& x, const torch::Tensor& mean,
    const torch::Tensor& rstd, const torch::Tensor& gamma) {
  const NoAutocast no_autocast;
  const auto dtype = mean.scalar_type();
  const int64_t width = x.size(-1);
  const auto x2 = x.reshape({-1, width}).to(dtype);
  const auto dy2 = dy.reshape({-1, width}).to(dtype);
  const auto xhat = (x2 - mean.unsqueeze(1)) * rstd.unsqueeze(1);
  const auto gdy = dy2 * gamma.to(dtype);
  const auto dx = rstd.unsqueeze(1) * (gdy - gdy.mean(-1, /*keepdim=*/true) -
                                       xhat * (gdy * xhat).mean(-1, /*keepdim=*/true));
  return {dx.to(x.scalar_type()).view(x.sizes()), (dy2 * xhat).sum(0).to(gamma.scalar_type()),
          dy2.sum(0).to(gamma.scalar_type())};
}

}  // namespace reference
}  // namespace exfusion
