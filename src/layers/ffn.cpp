// Dense and ExFusion FFNs (see ffn.h).
#include "exfusion/layers/ffn.h"

#include "exfusion/layers/linear.h"
#include "exfusion/util/error.h"
#include "exfusion/util/init.h"

namespace exfusion {
namespace {

torch::Tensor exact_gelu(const torch::Tensor& x) { return at::gelu(x); }  // erf form, as timm

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

}  // namespace

void ExFusionOptions::validate() const {
  if (num_experts() < 1) {
    throw InputError("ffn.num_experts = " + std::to_string(num_experts()) +
                     ": expected at least 1");
  }
  if (!(momentum() >= 0.0 && momentum() < 1.0)) {
    throw InputError("ffn.momentum = " + std::to_string(momentum()) +
                     ": expected a value in [0, 1)");
  }
}

MlpImpl::MlpImpl(int64_t dim, int64_t hidden) {
  fc1 = register_module("fc1", torch::nn::Linear(dim, hidden));
  fc2 = register_module("fc2", torch::nn::Linear(hidden, dim));
  for (const auto& linear : {fc1, fc2}) init_vit_linear(linear);
}

torch::Tensor MlpImpl::forward(const torch::Tensor& x) {
  return linear(exact_gelu(linear(x, fc1)), fc2);
}

std::shared_ptr<MlpImpl> MlpImpl::to_dense() const {
  auto copy = std::make_shared<MlpImpl>(fc1->weight.size(1), fc1->weight.size(0));
  torch::NoGradGuard no_grad;
  copy->fc1->weight.copy_(fc1->weight);
  copy->fc1->bias.copy_(fc1->bias);
  copy->fc2->weight.copy_(fc2->weight);
  copy->fc2->bias.copy_(fc2->bias);
  return copy;
}

ExFusionMlpImpl::ExFusionMlpImpl(int64_t dim, int64_t hidden, ExFusionOptions options_)
    : options(options_) {
  options.validate();
  auto bank = [&](int64_t in, int64_t out) {
    return ExpertBank(ExpertBankOptions(options.num_experts(), in, out)
                          .init(options.expert_init())
                          .noise_std(options.expert_noise_std()));
  };
  fc1 = register_module("fc1", bank(dim, hidden));
  fc2 = register_module("fc2", bank(hidden, dim));
  fusion = register_module("fusion", make_fusion_weights(options, dim));
  if (options.router_per_set() && options.variant() == FusionVariant::kMemoryBank) {
    fusion_down = register_module("fusion_down", make_fusion_weights(options, hidden));
  }
}

torch::Tensor ExFusionMlpImpl::forward(const torch::Tensor& x) {
  const auto m_up = fusion->forward(x);
  const auto [w1, b1] = fc1->fuse(m_up);
  const auto h = exact_gelu(linear(x, w1, b1));
  const auto m_down = fusion_down ? fusion_down->forward(h) : m_up;
  const auto [w2, b2] = fc2->fuse(m_down);
  return linear(h, w2, b2);
}

std::shared_ptr<MlpImpl> ExFusionMlpImpl::to_dense() const {
  torch::NoGradGuard no_grad;
  const auto device = fc1->weight.device();
  auto dense = std::make_shared<MlpImpl>(fc1->options.in_features(), fc1->options.out_features());
  dense->to(device, fc1->weight.scalar_type());
  const auto m_up = fusion->final_weights().to(device);
  const auto m_down =
      (fusion_down ? fusion_down->final_weights() : fusion->final_weights()).to(device);
  const auto [w1, b1] = fc1->fuse(m_up);
  const auto [w2, b2] = fc2->fuse(m_down);
  dense->fc1->weight.copy_(w1);
  dense->fc1->bias.copy_(b1);
  dense->fc2->weight.copy_(w2);
  dense->fc2->bias.copy_(b2);
  return dense;
}

std::vector<std::pair<std::string, torch::Tensor>> ExFusionMlpImpl::fusion_weights() const {
  if (!fusion_down) return {{"m", fusion->final_weights()}};
  return {{"m_up", fusion->final_weights()}, {"m_down", fusion_down->final_weights()}};
}

}  // namespace exfusion
