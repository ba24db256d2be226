// linear() and the autograd node behind its CUDA path (see linear.h): the forward pass is
// at::linear's; the backward takes dx from one GEMM and dW with db from another, whose
// epilogue sums the bias gradient (cublaslt_weight_grad.h), instead of a GEMM plus a reduction;
// and the Linear module over linear().
#include "exfusion/layers/linear.h"

#include <ATen/autocast_mode.h>
#include <ATen/core/ivalue.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/nn/init.h>

#include <cmath>
#include <utility>

#include "exfusion/util/autocast.h"
#include "exfusion/util/fast_paths.h"
#include "exfusion/util/init.h"

#ifdef EXFUSION_WITH_CUDA_KERNELS
#include "../util/kernel_dtype.h"
#include "cublaslt_weight_grad.h"
#endif

namespace exfusion {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

std::tuple<torch::Tensor, torch::Tensor> weight_bias_grad(const torch::Tensor& dy,
                                                          const torch::Tensor& x,
                                                          torch::ScalarType weight_dtype,
                                                          torch::ScalarType bias_dtype) {
#ifdef EXFUSION_WITH_CUDA_KERNELS
  if (dy.is_cuda() && dy.size(0) > 0) {
    if (has_kernel_dtype(dy.scalar_type()) && has_kernel_dtype(weight_dtype) &&
        bias_dtype == weight_dtype) {
      auto dweight = torch::empty({dy.size(1), x.size(1)}, x.options().dtype(weight_dtype));
      auto dbias = torch::empty({dy.size(1)}, x.options().dtype(bias_dtype));
      if (cuda::linear_weight_bias_grad_cublaslt(dy, x, dweight, dbias)) {
        count_fast_path_call(FastPath::kBiasGradEpilogue, true);
        return {dweight, dbias};
      }
    }
    // Operands the epilogue does not take, or no cuBLASLt algorithm for them: the GEMM and the
    // reduction below instead.
    count_fast_path_call(FastPath::kBiasGradEpilogue, false);
  }
#endif
  return reference::linear_weight_bias_grad(dy, x, weight_dtype, bias_dtype);
}

// The forward's FastPathContext, carried to the backward (which counts its call there, on an
// autograd device thread that does not see the caller's scope). ctx->saved_data holds IValues
// only, and a capsule is the IValue of an arbitrary C++ object; this keeps the node a
// torch::autograd::Function, with its saved-variable checks and needs_input_grad, rather than
// rewriting it as a Node by hand for one field.
struct SavedFastPaths : public torch::CustomClassHolder {
  explicit SavedFastPaths(FastPathContext context) : context(std::move(context)) {}
  FastPathContext context;
};

struct LinearWithBiasGradEpilogue : public torch::autograd::Function<LinearWithBiasGradEpilogue> {
  // The node casts its inputs itself, so the ops inside it must not be cast again.
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x,
                               const torch::Tensor& weight, const torch::Tensor& bias,
                               c10::ScalarType dtype) {
    const NoAutocast no_autocast;
    const auto x_cast = x.to(dtype);
    const auto weight_cast = weight.to(dtype);
    ctx->save_for_backward({x_cast, weight_cast});
    ctx->saved_data["x_dtype"] = x.scalar_type();
    ctx->saved_data["weight_dtype"] = weight.scalar_type();
    ctx->saved_data["bias_dtype"] = bias.scalar_type();
    ctx->saved_data["fast_paths"] =
        c10::IValue::make_capsule(c10::make_intrusive<SavedFastPaths>(FastPathScope::current()));
    return at::linear(x_cast, weight_cast, bias.to(dtype));
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const NoAutocast no_autocast;
    const auto fast_paths = ctx->saved_data["fast_paths"].toCapsule();
    const FastPathScope scope(static_cast<const SavedFastPaths&>(*fast_paths).context);
    const auto saved = ctx->get_saved_variables();
    const auto& x = saved[0];
    const auto& weight = saved[1];
    const int64_t out = weight.size(0);
    const auto dy = grads[0].to(weight.scalar_type()).reshape({-1, out}).contiguous();
    torch::Tensor dx;
    if (ctx->needs_input_grad(0)) {
      dx = at::mm(dy, weight).view(x.sizes()).to(ctx->saved_data["x_dtype"].toScalarType());
    }
    torch::Tensor dweight;
    torch::Tensor dbias;
    if (ctx->needs_input_grad(1) || ctx->needs_input_grad(2)) {
      std::tie(dweight, dbias) = weight_bias_grad(dy, x.reshape({-1, x.size(-1)}).contiguous(),
                                                  ctx->saved_data["weight_dtype"].toScalarType(),
                                                  ctx->saved_data["bias_dtype"].toScalarType());
    }
    return {dx, dweight, dbias, torch::Tensor()};
  }
};

// The node pays off where autograd would otherwise reduce the bias gradient in a kernel of its
// own: training on CUDA, bias and weight both trained, in one dtype the epilogue writes.
#ifdef EXFUSION_WITH_CUDA_KERNELS
bool use_epilogue(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias) {
  if (!FastPathScope::policy().bias_grad_epilogue || !x.is_cuda() || !bias.defined() ||
      x.numel() == 0 || !torch::GradMode::is_enabled() || !weight.requires_grad() ||
      !bias.requires_grad()) {
    return false;
  }
  const auto dtype = autocast_compute_dtype(x);
  const bool autocast = at::autocast::is_autocast_enabled(x.device().type());
  const auto castable = [&](const torch::Tensor& t) {
    return t.scalar_type() == dtype ||
           (autocast && at::isFloatingType(t.scalar_type()) && t.scalar_type() != torch::kFloat64);
  };
  const bool covered = has_kernel_dtype(dtype) && has_kernel_dtype(weight.scalar_type()) &&
                       weight.scalar_type() == bias.scalar_type() && castable(weight) &&
                       castable(bias) && weight.dim() == 2 && weight.device() == x.device() &&
                       bias.device() == x.device();
  // A covered call is counted in its backward pass, where cuBLASLt may still decline it.
  if (!covered) count_fast_path_call(FastPath::kBiasGradEpilogue, false);
  return covered;
}
#else
bool use_epilogue(const torch::Tensor& /*x*/, const torch::Tensor& /*weight*/,
                  const torch::Tensor& /*bias*/) {
  return false;
}
#endif

}  // namespace

torch::Tensor linear(const torch::Tensor& x, const torch::Tensor& weight,
                     const torch::Tensor& bias) {
  if (use_epilogue(x, weight, bias)) return linear_with_bias_grad_epilogue(x, weight, bias);
  return at::linear(x, weight, bias);
}

torch::Tensor linear_with_bias_grad_epilogue(const torch::Tensor& x, const torch::Tensor& weight,
                                             const torch::Tensor& bias) {
  TORCH_CHECK(bias.defined() && weight.dim() == 2 && bias.dim() == 1 &&
                  x.size(-1) == weight.size(1) && bias.size(0) == weight.size(0),
              "linear: input ", x.sizes(), ", weight ", weight.sizes(), " and bias ",
              bias.defined() ? bias.sizes() : at::IntArrayRef{}, " do not fit together");
  return LinearWithBiasGradEpilogue::apply(x, weight, bias, autocast_compute_dtype(x));
}

LinearImpl::LinearImpl(const LinearOptions& options) : options(options) { reset(); }

std::vector<std::string> LinearImpl::exempt_from_weight_decay() const {
  if (options.bias()) return {"bias"};
  return {};
}

void LinearImpl::reset() {
  weight =
      register_parameter("weight", torch::empty({options.out_features(), options.in_features()}));
  if (options.bias()) {
    bias = register_parameter("bias", torch::empty(options.out_features()));
  } else {
    bias = register_parameter("bias", {}, /*requires_grad=*/false);
  }
  reset_parameters();
}

void LinearImpl::reset_parameters() {
  torch::nn::init::kaiming_uniform_(weight, std::sqrt(5.0));
  if (bias.defined()) {
    const auto fan_in = std::get<0>(torch::nn::init::_calculate_fan_in_and_fan_out(weight));
    const double bound = 1.0 / std::sqrt(static_cast<double>(fan_in));
    torch::nn::init::uniform_(bias, -bound, bound);
  }
}

void LinearImpl::pretty_print(std::ostream& stream) const {
  stream << std::boolalpha << "exfusion::Linear(in_features=" << options.in_features()
         << ", out_features=" << options.out_features() << ", bias=" << options.bias() << ")";
}

// Without a bias, linear() is at::linear(x, weight).
torch::Tensor LinearImpl::forward(const torch::Tensor& x) { return linear(x, weight, bias); }

void init_vit_linear(const Linear& layer) {
  torch::NoGradGuard no_grad;
  trunc_normal_(layer->weight, 0.02);
  if (layer->bias.defined()) layer->bias.zero_();
}

Linear bias_free_linear(int64_t in_features, int64_t out_features, double std) {
  Linear layer(LinearOptions(in_features, out_features).bias(false));
  const torch::NoGradGuard no_grad;
  layer->weight.normal_(0.0, std);
  return layer;
}

namespace reference {

std::tuple<torch::Tensor, torch::Tensor> linear_weight_bias_grad(const torch::Tensor& dy,
                                                                 const torch::Tensor& x,
                                                                 torch::ScalarType weight_dtype,
                                                                 torch::ScalarType bias_dtype) {
  const NoAutocast no_autocast;
  const auto accumulate = dy.scalar_type() == torch::kFloat64 ? torch::kFloat64 : torch::kFloat32;
  return {at::mm(dy.t(), x).to(weight_dtype),
          dy.sum(0, /*keepdim=*/false, accumulate).to(bias_dtype)};
}

}  // namespace reference
}  // namespace exfusion
