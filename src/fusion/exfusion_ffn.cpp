// The ExFusion FFN kind (see exfusion_ffn.h).
#include "exfusion/fusion/exfusion_ffn.h"

#include "exfusion/util/error.h"

namespace exfusion {
namespace {

std::vector<double> to_vector(const torch::Tensor& t) {
  const auto cpu = t.to(torch::kCPU, torch::kFloat64).contiguous();
  return {cpu.data_ptr<double>(), cpu.data_ptr<double>() + cpu.numel()};
}

}  // namespace

std::shared_ptr<FusionWeightsImpl> make_fusion_weights(const ExFusionOptions& options,
                                                       int64_t in_features) {
  switch (options.variant()) {
    case FusionVariant::kStatic:
      return std::make_shared<StaticWeightsImpl>(options.num_experts());
    case FusionVariant::kLearned:
      return std::make_shared<LearnedWeightsImpl>(options.num_experts());
    case FusionVariant::kMemoryBank:
      return std::make_shared<MemoryBankWeightsImpl>(
          MemoryBankOptions(options.num_experts(), in_features)
              .momentum(options.momentum())
              .bank_init(options.bank_init()));
  }
  throw InputError("unknown fusion variant");
}

std::vector<std::pair<std::string, torch::Tensor>> fusion_weights_of(
    const FusionWeightsImpl& fusion, const FusionWeightsImpl* fusion_down) {
  if (fusion_down == nullptr) return {{"m", fusion.final_weights()}};
  return {{"m_up", fusion.final_weights()}, {"m_down", fusion_down->final_weights()}};
}

nlohmann::json fusion_weights_metrics(const FusionWeightsImpl& fusion,
                                      const FusionWeightsImpl* fusion_down) {
  auto weights = nlohmann::json::object();
  for (const auto& [name, value] : fusion_weights_of(fusion, fusion_down)) {
    weights[name] = to_vector(value);
  }
  return {{"fusion_weights", weights}};
}

void ExFusionOptions::validate(const config::Location& at) const {
  if (num_experts() < 1) {
    config::fail(at, "num_experts", num_experts(), "at least 1");
  }
  if (!(momentum() >= 0.0 && momentum() < 1.0)) {
    config::fail(at, "momentum", momentum(), "a value in [0, 1)");
  }
}

std::shared_ptr<FeedForwardImpl> ExFusionOptions::build(const FfnSite& site) const {
  return std::make_shared<ExFusionMlpImpl>(site.dim, site.hidden, *this, site.form);
}

std::string ExFusionOptions::run_name() const {
  return "exfusion-" + to_string(variant()) + "-n" + std::to_string(num_experts());
}

double ExFusionOptions::extra_step_bytes(const FfnSite& site, double tokens,
                                         int64_t gemm_bytes) const {
  const double n = static_cast<double>(num_experts());
  const double g = static_cast<double>(gemm_bytes);
  const double d = static_cast<double>(site.dim);
  const double h = static_cast<double>(site.hidden);
  // Every expert set's weights and biases (fc1: dim → hidden, fc2: hidden → dim, a gate).
  const double values = site.dense_parameters();
  double router = 0.0;
  if (variant() == FusionVariant::kMemoryBank) {
    router = 2.0 * tokens * d * g;
    if (router_per_set()) router += 2.0 * tokens * h * g;
  }
  return (32.0 * n - 36.0 + g) * values + router;
}

ExFusionMlpImpl::ExFusionMlpImpl(int64_t dim, int64_t hidden, ExFusionOptions options_,
                                 FfnForm form_)
    : options(options_), form(std::move(form_)) {
  options.validate({"", "ffn"});
  auto bank = [&](const std::string& name, int64_t in, int64_t out) {
    return ExpertBank(ExpertBankOptions(options.num_experts(), in, out)
                          .init(options.expert_init())
                          .init_std(form.init_std(name))
                          .truncated(form.truncated)
                          .noise_std(options.expert_noise_std())
                          .bias(form.bias));
  };
  if (form.gated) gate = register_module(form.gate_name, bank(form.gate_name, dim, hidden));
  fc1 = register_module(form.up_name, bank(form.up_name, dim, hidden));
  if (form.depthwise_kernel > 0) {
    dwconv = register_module("dwconv", DepthwiseGridConv(hidden, form.depthwise_kernel));
  }
  fc2 = register_module(form.down_name, bank(form.down_name, hidden, dim));
  fusion = register_module("fusion", make_fusion_weights(options, dim));
  if (options.router_per_set() && options.variant() == FusionVariant::kMemoryBank) {
    fusion_down = register_module("fusion_down", make_fusion_weights(options, hidden));
  }
}

torch::Tensor ExFusionMlpImpl::forward(const torch::Tensor& x) {
  return fused_experts_forward(x, *fusion, fusion_down.get(),
                               FormBanks<ExpertBankImpl>{form, gate ? gate.get() : nullptr, *fc1,
                                                         *fc2, dwconv ? dwconv.get() : nullptr});
}

std::vector<std::pair<std::string, torch::Tensor>> ExFusionMlpImpl::dense_tensors() const {
  return fused_experts_dense_tensors(
      *fusion, fusion_down.get(),
      FormBanks<ExpertBankImpl>{form, gate ? gate.get() : nullptr, *fc1, *fc2,
                                dwconv ? dwconv.get() : nullptr},
      fc1->weight.device());
}

ExpertSets ExFusionMlpImpl::expert_sets() const {
  return form_expert_sets(form, options.num_experts());
}

std::vector<std::pair<std::string, torch::Tensor>> ExFusionMlpImpl::fusion_weights() const {
  return fusion_weights_of(*fusion, fusion_down.get());
}

nlohmann::json ExFusionMlpImpl::metrics() const {
  return fusion_weights_metrics(*fusion, fusion_down.get());
}

}  // namespace exfusion
