// A plain FFN's act(x) (see activation.h): the autograd node over activation_cpu_kernels, which
// saves act'(x) in place of x, and the choice between it and ATen's activation.
#include "exfusion/layers/activation.h"

#include <torch/csrc/autograd/custom_function.h>

#include "cpu_activation_function.h"
#include "exfusion/util/fast_paths.h"

namespace exfusion {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

struct ActivationOnCpu : public torch::autograd::Function<ActivationOnCpu> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, int64_t function) {
    const auto values = x.contiguous();
    auto out = torch::empty_like(values);
    auto derivative = torch::empty_like(values);
    cpu::activation_forward(static_cast<cpu::ActivationFunction>(function), values.numel(),
                            values.data_ptr<float>(), out.data_ptr<float>(),
                            derivative.data_ptr<float>());
    ctx->save_for_backward({derivative});
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    return {grads[0] * ctx->get_saved_variables()[0], torch::Tensor()};
  }
};

}  // namespace

torch::Tensor hidden_units_activation(Activation activation, const torch::Tensor& x) {
  // Counted where the kernels could apply (CPU inputs), as a fallback for other dtypes.
  if (FastPathScope::policy().activation_kernels && x.is_cpu()) {
    const bool covered = x.scalar_type() == torch::kFloat32;
    count_fast_path_call(FastPath::kActivationKernels, covered);
    if (covered) {
      return ActivationOnCpu::apply(x, static_cast<int64_t>(cpu_activation_function(activation)));
    }
  }
  return activate(activation, x);
}

}  // namespace exfusion
