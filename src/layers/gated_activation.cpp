// A gated FFN's act(gate) ⊙ up (see gated_activation.h): the autograd node over the CPU kernels
// of gated_activation_cpu_kernels, and the choice between them and the composite.
#include "exfusion/layers/gated_activation.h"

#include <torch/csrc/autograd/custom_function.h>

#include "cpu_activation_function.h"
#include "exfusion/util/fast_paths.h"
#include "gated_activation_cpu_kernels.h"

namespace exfusion {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

struct GatedActivationOnCpu : public torch::autograd::Function<GatedActivationOnCpu> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& gate,
                               const torch::Tensor& up, int64_t function) {
    const auto gate_values = gate.contiguous();
    const auto up_values = up.contiguous();
    auto out = torch::empty_like(gate_values);
    cpu::gated_activation_forward(static_cast<cpu::ActivationFunction>(function), out.numel(),
                                  gate_values.data_ptr<float>(), up_values.data_ptr<float>(),
                                  out.data_ptr<float>());
    ctx->save_for_backward({gate_values, up_values});
    ctx->saved_data["function"] = function;
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto& gate = saved[0];
    const auto& up = saved[1];
    const auto grad_out = grads[0].contiguous();
    auto grad_gate = torch::empty_like(gate);
    auto grad_up = torch::empty_like(up);
    cpu::gated_activation_backward(
        static_cast<cpu::ActivationFunction>(ctx->saved_data["function"].toInt()), gate.numel(),
        gate.data_ptr<float>(), up.data_ptr<float>(), grad_out.data_ptr<float>(),
        grad_gate.data_ptr<float>(), grad_up.data_ptr<float>());
    return {grad_gate, grad_up, torch::Tensor()};
  }
};

}  // namespace

torch::Tensor gated_activation(Activation activation, const torch::Tensor& gate,
                               const torch::Tensor& up) {
  // Counted where the kernels could apply (CPU inputs), as a fallback where they do not cover
  // the dtype or unequal shapes.
  if (FastPathScope::policy().gated_activation_kernels && gate.is_cpu() && up.is_cpu()) {
    const bool covered = gate.scalar_type() == torch::kFloat32 &&
                         up.scalar_type() == torch::kFloat32 && gate.sizes() == up.sizes();
    count_fast_path_call(FastPath::kGatedActivationKernels, covered);
    if (covered) {
      return GatedActivationOnCpu::apply(gate, up,
                                         static_cast<int64_t>(cpu_activation_function(activation)));
    }
  }
  return gated_activation_reference(activation, gate, up);
}

torch::Tensor gated_activation_reference(Activation activation, const torch::Tensor& gate,
                                         const torch::Tensor& up) {
  return activate(activation, gate) * up;
}

}  // namespace exfusion
