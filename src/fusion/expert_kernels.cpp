// Expert-bank primitives: argument checks, the choice between the CUDA kernels and the ATen
// reference, and the reference itself (see expert_kernels.h).
#include "exfusion/fusion/expert_kernels.h"

#include "exfusion/util/autocast.h"
#include "exfusion/util/fast_paths.h"

#ifdef EXFUSION_WITH_CUDA_KERNELS
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/csrc/autograd/variable.h>

#include "../util/kernel_dtype.h"
#include "expert_kernels_cuda.h"
#endif

namespace exfusion {
namespace {

void check_bank(const torch::Tensor& experts, const torch::Tensor& coeffs) {
  TORCH_CHECK(experts.dim() >= 2, "expert bank: expected [N, ...] experts, got ", experts.sizes());
  TORCH_CHECK(at::isFloatingType(experts.scalar_type()),
              "expert bank: experts must be floating point, got ", experts.scalar_type());
  TORCH_CHECK(coeffs.dim() == 1 && coeffs.size(0) == experts.size(0),
              "expert bank: ", experts.size(0), " experts but coefficients of shape ",
              coeffs.sizes());
  TORCH_CHECK(coeffs.device() == experts.device(), "expert bank: experts on ", experts.device(),
              " but coefficients on ", coeffs.device());
}

void check_grad(const torch::Tensor& experts, const torch::Tensor& grad) {
  TORCH_CHECK(grad.numel() * experts.size(0) == experts.numel(), "expert bank: gradient of shape ",
              grad.sizes(), " for experts of shape ", experts.sizes());
  TORCH_CHECK(grad.device() == experts.device(), "expert bank: experts on ", experts.device(),
              " but their gradient on ", grad.device());
}

#ifdef EXFUSION_WITH_CUDA_KERNELS
// The kernels cover the training case, float32 experts on CUDA with a float32/bf16/float16
// gradient or output (`other_dtype`); anything else (float64 in the gradient checks, say)
// takes the reference.
bool use_kernels(const torch::Tensor& experts, torch::ScalarType other_dtype) {
  if (!experts.is_cuda() || !FastPathScope::policy().expert_kernels) return false;
  const bool covered = experts.scalar_type() == torch::kFloat32 && has_kernel_dtype(other_dtype);
  count_fast_path_call(FastPath::kExpertKernels, covered);
  return covered;
}
#else
bool use_kernels(const torch::Tensor& /*experts*/, torch::ScalarType /*other_dtype*/) {
  return false;
}
#endif

}  // namespace

bool expert_kernels_compiled() {
#ifdef EXFUSION_WITH_CUDA_KERNELS
  return true;
#else
  return false;
#endif
}

// The references compute in float32 even inside a bf16 autocast region.
namespace reference {

torch::Tensor mix_experts(const torch::Tensor& experts, const torch::Tensor& coeffs,
                          torch::ScalarType out_dtype) {
  const NoAutocast no_autocast;
  check_bank(experts, coeffs);
  const auto n = experts.size(0);
  const auto sum =
      at::matmul(coeffs.to(experts.scalar_type()).view({1, n}), experts.reshape({n, -1}));
  return sum.view(experts.sizes().slice(1)).to(out_dtype);
}

torch::Tensor mix_coefficient_grad(const torch::Tensor& experts, const torch::Tensor& grad) {
  const NoAutocast no_autocast;
  check_grad(experts, grad);
  const auto n = experts.size(0);
  return at::matmul(experts.reshape({n, -1}), grad.to(experts.scalar_type()).reshape({-1}));
}

void factored_adamw_(const torch::Tensor& params, const torch::Tensor& exp_avg,
                     const torch::Tensor& exp_avg_sq, const torch::Tensor& grad,
                     const torch::Tensor& coeffs, const torch::Tensor& step,
                     const torch::Tensor& grad_scale, const AdamWOptions& hyper,
                     const torch::Tensor& lr) {
  const NoAutocast no_autocast;
  check_bank(params, coeffs);
  check_grad(params, grad);
  const auto dtype = params.scalar_type();
  auto grads = at::outer(coeffs.to(dtype), grad.to(dtype).reshape({-1})).view(params.sizes());
  if (grad_scale.defined()) grads.mul_(grad_scale);
  if (lr.defined()) {
    at::_fused_adamw_({params}, {grads}, {exp_avg}, {exp_avg_sq}, {}, {step}, lr, hyper.beta1,
                      hyper.beta2, hyper.weight_decay, hyper.eps, /*amsgrad=*/false,
                      /*maximize=*/false);
    return;
  }
  at::_fused_adamw_({params}, {grads}, {exp_avg}, {exp_avg_sq}, {}, {step}, hyper.lr, hyper.beta1,
                    hyper.beta2, hyper.weight_decay, hyper.eps, /*amsgrad=*/false,
                    /*maximize=*/false);
}

}  // namespace reference

torch::Tensor mix_experts(const torch::Tensor& experts, const torch::Tensor& coeffs,
                          torch::ScalarType out_dtype) {
  if (!use_kernels(experts, out_dtype)) return reference::mix_experts(experts, coeffs, out_dtype);
#ifdef EXFUSION_WITH_CUDA_KERNELS
  check_bank(experts, coeffs);
  const c10::cuda::CUDAGuard guard(experts.device());
  const auto e = experts.contiguous();
  const auto c = coeffs.to(torch::kFloat32).contiguous();
  auto out = torch::empty(experts.sizes().slice(1), experts.options().dtype(out_dtype));
  cuda::mix_experts(e.data_ptr<float>(), c.data_ptr<float>(), e.size(0), out.numel(),
                    out.data_ptr(), kernel_dtype(out_dtype), at::cuda::getCurrentCUDAStream());
  return out;
#else
  TORCH_INTERNAL_ASSERT(false, "use_kernels is false in a build without the CUDA kernels");
#endif
}

torch::Tensor mix_coefficient_grad(const torch::Tensor& experts, const torch::Tensor& grad) {
  if (!use_kernels(experts, grad.scalar_type()))
    return reference::mix_coefficient_grad(experts, grad);
#ifdef EXFUSION_WITH_CUDA_KERNELS
  check_grad(experts, grad);
  const c10::cuda::CUDAGuard guard(experts.device());
  const auto e = experts.contiguous();
  const auto g = grad.contiguous();
  const auto n = e.size(0);
  const auto numel = g.numel();
  auto partials = torch::empty({n, cuda::coefficient_partial_blocks(numel)},
                               experts.options().dtype(torch::kFloat32));
  cuda::mix_coefficient_partials(e.data_ptr<float>(), g.data_ptr(), kernel_dtype(g.scalar_type()),
                                 n, numel, partials.data_ptr<float>(),
                                 at::cuda::getCurrentCUDAStream());
  return partials.sum(1);
#else
  TORCH_INTERNAL_ASSERT(false, "use_kernels is false in a build without the CUDA kernels");
#endif
}

void factored_adamw_(const torch::Tensor& params, const torch::Tensor& exp_avg,
                     const torch::Tensor& exp_avg_sq, const torch::Tensor& grad,
                     const torch::Tensor& coeffs, const torch::Tensor& step,
                     const torch::Tensor& grad_scale, const AdamWOptions& hyper,
                     const torch::Tensor& lr) {
  if (!use_kernels(params, grad.scalar_type())) {
    reference::factored_adamw_(params, exp_avg, exp_avg_sq, grad, coeffs, step, grad_scale, hyper,
                               lr);
    return;
  }
#ifdef EXFUSION_WITH_CUDA_KERNELS
  check_bank(params, coeffs);
  check_grad(params, grad);
  for (const auto* t : {&params, &exp_avg, &exp_avg_sq}) {
    TORCH_CHECK(
        t->is_contiguous() && t->scalar_type() == torch::kFloat32 && t->sizes() == params.sizes(),
        "factored AdamW: parameters and moments must be contiguous float32 of one shape");
  }
  const auto on_device_scalar = [&](const torch::Tensor& t) {
    return t.scalar_type() == torch::kFloat32 && t.numel() == 1 && t.device() == params.device();
  };
  TORCH_CHECK(on_device_scalar(step),
              "factored AdamW: step must be a float32 scalar on the device");
  TORCH_CHECK(!lr.defined() || on_device_scalar(lr),
              "factored AdamW: lr must be a float32 scalar on the device");
  const c10::cuda::CUDAGuard guard(params.device());
  const auto g = grad.contiguous();
  const auto c = coeffs.to(torch::kFloat32).contiguous();
  torch::Tensor scale;
  if (grad_scale.defined()) scale = grad_scale.to(params.device(), torch::kFloat32).contiguous();
  cuda::FactoredAdamWArgs args{};
  args.params = params.data_ptr<float>();
  args.exp_avg = exp_avg.data_ptr<float>();
  args.exp_avg_sq = exp_avg_sq.data_ptr<float>();
  args.grad = g.data_ptr();
  args.grad_dtype = kernel_dtype(g.scalar_type());
  args.coeffs = c.data_ptr<float>();
  args.step = step.data_ptr<float>();
  args.grad_scale = scale.defined() ? scale.data_ptr<float>() : nullptr;
  args.lr_on_device = lr.defined() ? lr.data_ptr<float>() : nullptr;
  args.num_experts = params.size(0);
  args.numel = g.numel();
  args.lr = static_cast<float>(hyper.lr);
  args.beta1 = static_cast<float>(hyper.beta1);
  args.beta2 = static_cast<float>(hyper.beta2);
  args.weight_decay = static_cast<float>(hyper.weight_decay);
  args.eps = static_cast<float>(hyper.eps);
  cuda::factored_adamw(args, at::cuda::getCurrentCUDAStream());
  // Written through raw pointers: autograd must see the in-place change, as after the
  // reference's in-place ops, to refuse a backward pass through the old values.
  for (const auto* t : {&params, &exp_avg, &exp_avg_sq}) torch::autograd::impl::bump_version(*t);
#endif
}

}  // namespace exfusion
