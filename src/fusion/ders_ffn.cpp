// The DeRS upcycling FFN kinds: shared base + per-expert deltas, routed (ders-moe) or fused
// (ders-exfusion); see ders_ffn.h.
#include "exfusion/fusion/ders_ffn.h"

#include <iomanip>
#include <sstream>
#include <tuple>

namespace exfusion {

DeltaExpertBankOptions DersDeltaOptions::bank(int64_t num_experts, int64_t in, int64_t out,
                                              const FfnForm& ffn_form,
                                              const std::string& layer) const {
  return DeltaExpertBankOptions(num_experts, in, out)
      .form(form)
      .keep_ratio(keep_ratio)
      .rank(rank)
      .bias(ffn_form.bias)
      .init_std(ffn_form.init_std(layer))
      .truncated(ffn_form.truncated);
}

std::string DersDeltaOptions::run_name() const {
  if (form == DeltaForm::kLowRank) return "lowrank" + std::to_string(rank);
  std::ostringstream name;
  name << "sparse" << std::defaultfloat << std::setprecision(3) << keep_ratio;
  return name.str();
}

std::shared_ptr<FeedForwardImpl> DersMoeOptions::build(const FfnSite& site) const {
  return std::make_shared<DersMoeMlpImpl>(site.dim, site.hidden, *this, site.form);
}

std::string DersMoeOptions::run_name() const {
  return "ders-" + moe.run_name() + "-" + delta.run_name();
}

std::shared_ptr<FeedForwardImpl> DersExFusionOptions::build(const FfnSite& site) const {
  return std::make_shared<DersExFusionMlpImpl>(site.dim, site.hidden, *this, site.form);
}

std::string DersExFusionOptions::run_name() const {
  return "ders-" + exfusion.run_name() + "-" + delta.run_name();
}

DersMoeMlpImpl::DersMoeMlpImpl(int64_t dim, int64_t hidden, DersMoeOptions options_, FfnForm form_)
    : TopKMixtureImpl(dim, options_.moe, std::move(form_)), delta(options_.delta) {
  const auto n = options.num_experts();
  const auto bank = [&](const std::string& name, int64_t in, int64_t out) {
    return DeltaExpertBank(delta.bank(n, in, out, form, name));
  };
  if (form.gated) gate = register_module(form.gate_name, bank(form.gate_name, dim, hidden));
  fc1 = register_module(form.up_name, bank(form.up_name, dim, hidden));
  fc2 = register_module(form.down_name, bank(form.down_name, hidden, dim));
  reset_router();
}

TopKMixtureImpl::StackedExperts DersMoeMlpImpl::stacked_experts() const {
  const auto [up_weight, up_bias] = fc1->expert_weights();
  const auto [down_weight, down_bias] = fc2->expert_weights();
  StackedExperts experts{up_weight, up_bias, down_weight, down_bias, {}, {}};
  if (gate) std::tie(experts.gate_weight, experts.gate_bias) = gate->expert_weights();
  return experts;
}

DersExFusionMlpImpl::DersExFusionMlpImpl(int64_t dim, int64_t hidden, DersExFusionOptions options_,
                                         FfnForm form_)
    : options(options_), form(std::move(form_)) {
  const auto& exfusion = options.exfusion;
  exfusion.validate({"", "ffn"});
  const auto n = exfusion.num_experts();
  const auto bank = [&](const std::string& name, int64_t in, int64_t out) {
    return DeltaExpertBank(options.delta.bank(n, in, out, form, name));
  };
  if (form.gated) gate = register_module(form.gate_name, bank(form.gate_name, dim, hidden));
  fc1 = register_module(form.up_name, bank(form.up_name, dim, hidden));
  if (form.depthwise_kernel > 0) {
    dwconv = register_module("dwconv", DepthwiseGridConv(hidden, form.depthwise_kernel));
  }
  fc2 = register_module(form.down_name, bank(form.down_name, hidden, dim));
  fusion = register_module("fusion", make_fusion_weights(exfusion, dim));
  if (exfusion.router_per_set() && exfusion.variant() == FusionVariant::kMemoryBank) {
    fusion_down = register_module("fusion_down", make_fusion_weights(exfusion, hidden));
  }
}

torch::Tensor DersExFusionMlpImpl::forward(const torch::Tensor& x) {
  return fused_experts_forward(
      x, *fusion, fusion_down.get(),
      FormBanks<DeltaExpertBankImpl>{form, gate ? gate.get() : nullptr, *fc1, *fc2,
                                     dwconv ? dwconv.get() : nullptr});
}

std::vector<std::pair<std::string, torch::Tensor>> DersExFusionMlpImpl::dense_tensors() const {
  return fused_experts_dense_tensors(
      *fusion, fusion_down.get(),
      FormBanks<DeltaExpertBankImpl>{form, gate ? gate.get() : nullptr, *fc1, *fc2,
                                     dwconv ? dwconv.get() : nullptr},
      fc1->base.device());
}

ExpertSets DersExFusionMlpImpl::expert_sets() const {
  return form_expert_sets(form, options.exfusion.num_experts());
}

nlohmann::json DersExFusionMlpImpl::metrics() const {
  return fusion_weights_metrics(*fusion, fusion_down.get());
}

}  // namespace exfusion
