// Expert bank: stacked experts and the weighted sum that fuses them (see expert_bank.h).
#include "exfusion/fusion/expert_bank.h"

#include "exfusion/util/autocast.h"
#include "exfusion/util/error.h"
#include "exfusion/util/init.h"

namespace exfusion {

const config::Choices<ExpertInit>& expert_init_names() {
  static const config::Choices<ExpertInit> names{{{"independent", ExpertInit::kIndependent},
                                                  {"copy", ExpertInit::kCopy},
                                                  {"copy+noise", ExpertInit::kCopyNoise}}};
  return names;
}

std::string to_string(ExpertInit init) { return expert_init_names().name_of(init); }

ExpertBankImpl::ExpertBankImpl(ExpertBankOptions options_) : options(options_) {
  TORCH_CHECK(options.num_experts() >= 1, "ExpertBank needs at least one expert");
  weight = register_parameter("weight", torch::empty({options.num_experts(), options.out_features(),
                                                      options.in_features()}));
  if (options.bias()) {
    bias =
        register_parameter("bias", torch::empty({options.num_experts(), options.out_features()}));
  }
  reset_parameters();
}

void ExpertBankImpl::reset_parameters() {
  torch::NoGradGuard no_grad;
  // The model's init for the layer it stands for (ViT's: truncated normal, ±2 std), zero bias.
  const double std = options.init_std();
  if (options.init() == ExpertInit::kIndependent) {
    init_normal_(weight, std, options.truncated());
  } else {
    auto first = weight[0];
    init_normal_(first, std, options.truncated());
    weight.copy_(first.unsqueeze(0).expand_as(weight));
    if (options.init() == ExpertInit::kCopyNoise) {
      weight.add_(torch::randn_like(weight) * options.noise_std());
    }
  }
  if (bias.defined()) bias.zero_();
}

std::pair<torch::Tensor, torch::Tensor> ExpertBankImpl::fuse(const torch::Tensor& m) const {
  const auto out_dtype = autocast_compute_dtype(weight);
  return {expert_mix(weight, m, out_dtype, weight_grad_sink),
          bias.defined() ? expert_mix(bias, m, out_dtype) : torch::Tensor()};
}

ExpertSets form_expert_sets(const FfnForm& form, int64_t num_experts,
                            std::shared_ptr<torch::nn::Module> router) {
  ExpertSets sets{num_experts, {}, std::move(router)};
  for (const auto& name : form.layer_names()) {
    sets.sets.push_back({name, name == form.down_name ? HiddenAxis::kColumns : HiddenAxis::kRows});
  }
  return sets;
}

}  // namespace exfusion
