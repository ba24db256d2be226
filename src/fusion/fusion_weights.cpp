// Static, learned and memory-bank fusion weights (see fusion_weights.h).
#include "exfusion/fusion/fusion_weights.h"

#include "exfusion/util/error.h"
#include "exfusion/util/global_batch.h"
#include "exfusion/util/init.h"

namespace exfusion {

const config::Choices<FusionVariant>& fusion_variant_names() {
  static const config::Choices<FusionVariant> names{{{"sw", FusionVariant::kStatic},
                                                     {"dw", FusionVariant::kLearned},
                                                     {"mb", FusionVariant::kMemoryBank}}};
  return names;
}

std::string to_string(FusionVariant variant) { return fusion_variant_names().name_of(variant); }

StaticWeightsImpl::StaticWeightsImpl(int64_t num_experts) : num_experts_(num_experts) {}

torch::Tensor StaticWeightsImpl::forward(const torch::Tensor& x) {
  return torch::full({num_experts_}, 1.0 / static_cast<double>(num_experts_),
                     x.options().dtype(torch::kFloat32));
}

torch::Tensor StaticWeightsImpl::final_weights() const {
  return torch::full({num_experts_}, 1.0 / static_cast<double>(num_experts_));
}

LearnedWeightsImpl::LearnedWeightsImpl(int64_t num_experts) {
  weights = register_parameter("weights",
                               torch::full({num_experts}, 1.0 / static_cast<double>(num_experts)));
}

torch::Tensor LearnedWeightsImpl::forward(const torch::Tensor& /*x*/) { return weights; }

torch::Tensor LearnedWeightsImpl::final_weights() const {
  return weights.detach().to(torch::kCPU, torch::kFloat32).clone();
}

MemoryBankWeightsImpl::MemoryBankWeightsImpl(MemoryBankOptions options_) : options(options_) {
  router = register_module("router", Linear(options.in_features(), options.num_experts()));
  {
    torch::NoGradGuard no_grad;
    trunc_normal_(router->weight, 0.02);
    router->bias.zero_();
  }
  bank = register_buffer("bank", torch::full({options.num_experts()}, options.bank_init()));
}

torch::Tensor MemoryBankWeightsImpl::router_weights(const torch::Tensor& x) {
  // Softmax in at least float32 even under bf16 autocast; float64 models stay float64.
  auto logits = router->forward(x);
  logits = logits.to(at::promote_types(logits.scalar_type(), torch::kFloat32));
  auto probs = torch::softmax(logits, -1);
  // Under data parallelism, the mean over the global batch (SPEC §1).
  return global_batch_mean(probs.reshape({-1, options.num_experts()}).mean(0));
}

torch::Tensor MemoryBankWeightsImpl::forward(const torch::Tensor& x) {
  if (!is_training()) return bank;
  const double delta = options.momentum();
  auto m = bank * delta + router_weights(x) * (1.0 - delta);
  torch::NoGradGuard no_grad;
  bank.copy_(m.detach());
  return m;
}

torch::Tensor MemoryBankWeightsImpl::final_weights() const {
  return bank.detach().to(torch::kCPU, torch::kFloat32).clone();
}

}  // namespace exfusion
