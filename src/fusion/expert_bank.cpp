// Expert bank: stacked experts and the weighted sum that fuses them (see expert_bank.h).
#include "exfusion/fusion/expert_bank.h"

#include "exfusion/util/autocast.h"
#include "exfusion/util/error.h"
#include "exfusion/util/init.h"

namespace exfusion {

ExpertInit parse_expert_init(const std::string& name) {
  if (name == "independent") return ExpertInit::kIndependent;
  if (name == "copy") return ExpertInit::kCopy;
  if (name == "copy+noise") return ExpertInit::kCopyNoise;
  throw InputError("expert init '" + name + "': expected independent, copy or copy+noise");
}

std::string to_string(ExpertInit init) {
  switch (init) {
    case ExpertInit::kIndependent:
      return "independent";
    case ExpertInit::kCopy:
      return "copy";
    case ExpertInit::kCopyNoise:
      return "copy+noise";
  }
  return "independent";
}

ExpertBankImpl::ExpertBankImpl(ExpertBankOptions options_) : options(options_) {
  TORCH_CHECK(options.num_experts() >= 1, "ExpertBank needs at least one expert");
  weight = register_parameter("weight", torch::empty({options.num_experts(), options.out_features(),
                                                      options.in_features()}));
  bias = register_parameter("bias", torch::empty({options.num_experts(), options.out_features()}));
  reset_parameters();
}

void ExpertBankImpl::reset_parameters() {
  torch::NoGradGuard no_grad;
  // ViT's init for linear layers: truncated normal (±2 std), zero bias.
  const double std = options.init_std();
  if (options.init() == ExpertInit::kIndependent) {
    trunc_normal_(weight, std);
  } else {
    auto first = weight[0];
    trunc_normal_(first, std);
    weight.copy_(first.unsqueeze(0).expand_as(weight));
    if (options.init() == ExpertInit::kCopyNoise) {
      weight.add_(torch::randn_like(weight) * options.noise_std());
    }
  }
  bias.zero_();
}

std::pair<torch::Tensor, torch::Tensor> ExpertBankImpl::fuse(const torch::Tensor& m) const {
  const auto out_dtype = autocast_compute_dtype(weight);
  return {expert_mix(weight, m, out_dtype, weight_grad_sink), expert_mix(bias, m, out_dtype)};
}

}  // namespace exfusion
