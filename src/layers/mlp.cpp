// The dense FFN (see mlp.h).
#include "exfusion/layers/mlp.h"

#include "exfusion/layers/activation.h"
#include "exfusion/layers/gated_activation.h"
#include "exfusion/layers/linear.h"
#include "exfusion/util/init.h"

namespace exfusion {

torch::Tensor exact_gelu(const torch::Tensor& x) { return at::gelu(x); }

torch::Tensor hidden_activation(const FfnForm& form, const torch::Tensor& up,
                                const torch::Tensor& gate) {
  if (!form.gated) return hidden_units_activation(form.activation, up);
  return gated_activation(form.activation, gate, up);
}

MlpImpl::MlpImpl(int64_t dim, int64_t hidden) : MlpImpl(dim, hidden, FfnForm::plain()) {}

MlpImpl::MlpImpl(int64_t dim, int64_t hidden, FfnForm form_) : form(std::move(form_)) {
  const auto make = [&](int64_t in, int64_t out) {
    return Linear(LinearOptions(in, out).bias(form.bias));
  };
  // Registered gate first: the gated form's names list it first (FfnForm::layer_names).
  if (form.gated) gate = register_module(form.gate_name, make(dim, hidden));
  fc1 = register_module(form.up_name, make(dim, hidden));
  if (form.depthwise_kernel > 0) {
    dwconv = register_module("dwconv", DepthwiseGridConv(hidden, form.depthwise_kernel));
  }
  fc2 = register_module(form.down_name, make(hidden, dim));
  const torch::NoGradGuard no_grad;
  for (const auto& name : form.layer_names()) {
    const auto& linear = name == form.down_name ? fc2 : name == form.up_name ? fc1 : gate;
    init_normal_(linear->weight, form.init_std(name), form.truncated);
    if (linear->bias.defined()) linear->bias.zero_();
  }
}

torch::Tensor MlpImpl::forward(const torch::Tensor& x) {
  const auto up = dwconv ? dwconv->forward(fc1->forward(x)) : fc1->forward(x);
  return fc2->forward(hidden_activation(form, up, gate ? gate->forward(x) : torch::Tensor()));
}

std::vector<std::pair<std::string, torch::Tensor>> MlpImpl::dense_tensors() const {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const auto& item : named_parameters()) out.emplace_back(item.key(), item.value().detach());
  return out;
}

std::shared_ptr<FeedForwardImpl> DenseFfnOptions::build(const FfnSite& site) const {
  return std::make_shared<MlpImpl>(site.dim, site.hidden, site.form);
}

}  // namespace exfusion
