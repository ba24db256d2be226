// RMS norm (see rms_norm.h): float32 on the CPU through the kernels of rms_norm_cpu_kernels
// (train.rms_norm_kernels), everything else through the ATen composite they are tested against.
#include "exfusion/layers/rms_norm.h"

#include <torch/csrc/autograd/custom_function.h>

#include "exfusion/util/fast_paths.h"
#include "rms_norm_cpu_kernels.h"

namespace exfusion {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

struct RmsNormOnCpu : public torch::autograd::Function<RmsNormOnCpu> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x,
                               const torch::Tensor& weight, double eps) {
    const int64_t width = x.size(-1);
    const auto rows_of_x = x.contiguous();
    const int64_t rows = rows_of_x.numel() / width;
    const auto gamma = weight.contiguous();
    auto y = torch::empty_like(rows_of_x);
    auto inverse_rms = torch::empty({rows}, x.options());
    cpu::rms_norm_forward(rows, width, rows_of_x.data_ptr<float>(), gamma.data_ptr<float>(),
                          static_cast<float>(eps), y.data_ptr<float>(),
                          inverse_rms.data_ptr<float>());
    ctx->save_for_backward({rows_of_x, gamma, inverse_rms});
    return y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto& x = saved[0];
    const auto& gamma = saved[1];
    const auto& inverse_rms = saved[2];
    const auto grad_y = grads[0].contiguous();
    auto grad_x = torch::empty_like(x);
    auto grad_weight = torch::empty_like(gamma);
    cpu::rms_norm_backward(inverse_rms.numel(), gamma.numel(), x.data_ptr<float>(),
                           gamma.data_ptr<float>(), inverse_rms.data_ptr<float>(),
                           grad_y.data_ptr<float>(), grad_x.data_ptr<float>(),
                           grad_weight.data_ptr<float>());
    return {grad_x, grad_weight, torch::Tensor()};
  }
};

// The kernels take float32 on the CPU, the weight beside the input; counted where they could
// apply (a CPU input), as a fallback where its dtype is another.
bool use_kernels(const torch::Tensor& x, const torch::Tensor& weight) {
  if (!FastPathScope::policy().rms_norm_kernels || !x.is_cpu() || x.dim() < 1 || x.numel() == 0) {
    return false;
  }
  const bool covered = x.scalar_type() == torch::kFloat32 &&
                       weight.scalar_type() == torch::kFloat32 && weight.is_cpu() &&
                       weight.dim() == 1 && weight.size(0) == x.size(-1);
  count_fast_path_call(FastPath::kRmsNormKernels, covered);
  return covered;
}

}  // namespace

RMSNormImpl::RMSNormImpl(int64_t dim, double eps_) : eps(eps_) {
  weight = register_parameter("weight", torch::ones({dim}));
}

torch::Tensor RMSNormImpl::forward(const torch::Tensor& x) {
  if (use_kernels(x, weight)) return RmsNormOnCpu::apply(x, weight, eps);
  return rms_norm_reference(x, weight, eps);
}

torch::Tensor rms_norm_reference(const torch::Tensor& x, const torch::Tensor& weight, double eps) {
  const auto variance = x.to(torch::kFloat32).pow(2).mean(-1, /*keepdim=*/true);
  auto normalised = x * torch::rsqrt(variance + eps);
  // A half-precision weight keeps its dtype, as Hugging Face's norms do.
  if (weight.scalar_type() == torch::kBFloat16 || weight.scalar_type() == torch::kHalf) {
    normalised = normalised.to(weight.scalar_type());
  }
  return weight * normalised;
}

}  // namespace exfusion
