// ExpertMix autograd node (see expert_mix.h).
#include "exfusion/fusion/expert_mix.h"

#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/functions/utils.h>
#include <torch/csrc/autograd/saved_variable.h>

#include <string>
#include <utility>

#include "exfusion/fusion/expert_kernels.h"
#include "exfusion/util/fast_paths.h"

namespace exfusion {
namespace {

using torch::autograd::variable_list;

struct ExpertMixBackward : public torch::autograd::Node {
  torch::autograd::SavedVariable experts, coeffs;
  std::shared_ptr<FactoredGradient> sink;
  // The forward's fast-path scope: on CUDA this runs on an autograd device thread, where the
  // caller's scope is not current, and mix_coefficient_grad chooses kernel or reference by it.
  FastPathContext fast_paths;

  std::string name() const override { return "ExpertMixBackward"; }

  variable_list apply(variable_list&& grads) override {
    const FastPathScope scope(fast_paths);
    const auto& grad = grads[0];
    variable_list out(2);
    if (!grad.defined()) return out;
    const auto e = experts.unpack();
    const auto m = coeffs.unpack();
    if (task_should_compute_output(1)) out[1] = mix_coefficient_grad(e, grad);
    if (task_should_compute_output(0)) {
      if (sink && !sink->pending()) {
        sink->grad = grad.detach();
        sink->coeffs = m.detach();
      } else {
        out[0] = at::outer(m, grad.to(m.scalar_type()).reshape({-1})).view(e.sizes());
      }
    }
    return out;
  }

  void release_variables() override {
    experts.reset_data();
    coeffs.reset_data();
  }
};

}  // namespace

void FactoredGradient::clear() {
  grad.reset();
  coeffs.reset();
  scale.reset();
}

torch::Tensor FactoredGradient::materialize(const torch::Tensor& experts) const {
  auto full = at::outer(coeffs, grad.to(coeffs.scalar_type()).reshape({-1})).view(experts.sizes());
  if (scale.defined()) full.mul_(scale);
  return full;
}

torch::Tensor expert_mix(const torch::Tensor& experts, const torch::Tensor& coeffs,
                         torch::ScalarType out_dtype,
                         const std::shared_ptr<FactoredGradient>& sink) {
  // Coefficients in the experts' precision: float32 in training, float64 in gradient checks.
  const auto m = coeffs.to(experts.scalar_type());
  torch::Tensor out;
  {
    const at::AutoDispatchBelowADInplaceOrView below_autograd;
    out = mix_experts(experts, m, out_dtype);
  }
  if (torch::autograd::compute_requires_grad(experts, m)) {
    const std::shared_ptr<ExpertMixBackward> node(new ExpertMixBackward(),
                                                  torch::autograd::deleteNode);
    node->set_next_edges(torch::autograd::collect_next_edges(experts, m));
    node->experts = torch::autograd::SavedVariable(experts, /*is_output=*/false);
    node->coeffs = torch::autograd::SavedVariable(m, /*is_output=*/false);
    node->sink = sink;
    node->fast_paths = FastPathScope::current();
    torch::autograd::set_history(out, node);
  }
  return out;
}

}  // namespace exfusion
