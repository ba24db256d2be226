// The DeRS upcycling FFN kinds: shared base + per-expert deltas, routed (ders-moe) or fused
// (ders-exfusion); see ders_ffn.h.
#include "exfusion/fusion/ders_ffn.h"

#include <iomanip>
#include <sstream>

namespace exfusion {

DeltaExpertBankOptions DersDeltaOptions::bank(int64_t num_experts, int64_t in, int64_t out) const {
  return DeltaExpertBankOptions(num_experts, in, out).form(form).keep_ratio(keep_ratio).rank(rank);
}

std::string DersDeltaOptions::run_name() const {
  if (form == DeltaForm::kLowRank) return "lowrank" + std::to_string(rank);
  std::ostringstream name;
  name << "sparse" << std::defaultfloat << std::setprecision(3) << keep_ratio;
  return name.str();
}

std::shared_ptr<FeedForwardImpl> DersMoeOptions::build(int64_t dim, int64_t hidden) const {
  return std::make_shared<DersMoeMlpImpl>(dim, hidden, *this);
}

std::string DersMoeOptions::run_name() const {
  return "ders-" + moe.run_name() + "-" + delta.run_name();
}

std::shared_ptr<FeedForwardImpl> DersExFusionOptions::build(int64_t dim, int64_t hidden) const {
  return std::make_shared<DersExFusionMlpImpl>(dim, hidden, *this);
}

std::string DersExFusionOptions::run_name() const {
  return "ders-" + exfusion.run_name() + "-" + delta.run_name();
}

DersMoeMlpImpl::DersMoeMlpImpl(int64_t dim, int64_t hidden, DersMoeOptions options_)
    : TopKMixtureImpl(dim, options_.moe), delta(options_.delta) {
  const auto n = options.num_experts();
  fc1 = register_module("fc1", DeltaExpertBank(delta.bank(n, dim, hidden)));
  fc2 = register_module("fc2", DeltaExpertBank(delta.bank(n, hidden, dim)));
  reset_router();
}

TopKMixtureImpl::StackedExperts DersMoeMlpImpl::stacked_experts() const {
  const auto [up_weight, up_bias] = fc1->expert_weights();
  const auto [down_weight, down_bias] = fc2->expert_weights();
  return {up_weight, up_bias, down_weight, down_bias};
}

DersExFusionMlpImpl::DersExFusionMlpImpl(int64_t dim, int64_t hidden, DersExFusionOptions options_)
    : options(std::move(options_)) {
  const auto& exfusion = options.exfusion;
  exfusion.validate({"", "ffn"});
  const auto n = exfusion.num_experts();
  fc1 = register_module("fc1", DeltaExpertBank(options.delta.bank(n, dim, hidden)));
  fc2 = register_module("fc2", DeltaExpertBank(options.delta.bank(n, hidden, dim)));
  fusion = register_module("fusion", make_fusion_weights(exfusion, dim));
  if (exfusion.router_per_set() && exfusion.variant() == FusionVariant::kMemoryBank) {
    fusion_down = register_module("fusion_down", make_fusion_weights(exfusion, hidden));
  }
}

torch::Tensor DersExFusionMlpImpl::forward(const torch::Tensor& x) {
  return fused_experts_forward(x, *fusion, fusion_down.get(), *fc1, *fc2);
}

std::vector<std::pair<std::string, torch::Tensor>> DersExFusionMlpImpl::dense_tensors() const {
  return fused_experts_dense_tensors(*fusion, fusion_down.get(), *fc1, *fc2, fc1->base.device());
}

nlohmann::json DersExFusionMlpImpl::metrics() const {
  return fusion_weights_metrics(*fusion, fusion_down.get());
}

}  // namespace exfusion
