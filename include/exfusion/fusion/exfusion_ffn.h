// The FFN kind "exfusion": fc1 and fc2 are expert banks fused by one set of fusion weights per
// layer (SPEC §1), so every forward costs one dense FFN plus a weighted sum of weights. After
// training it has a dense form (W = Σ m_i E_i with the final m) and reports its fusion weights.
#pragma once
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <memory>
#include <string>
#include <vector>

#include "exfusion/config/fields.h"
#include "exfusion/fusion/expert_bank.h"
#include "exfusion/fusion/fusion_weights.h"
#include "exfusion/layers/capabilities.h"
#include "exfusion/layers/depthwise_grid_conv.h"
#include "exfusion/layers/ffn_kind.h"
#include "exfusion/layers/linear.h"
#include "exfusion/layers/mlp.h"

namespace exfusion {

struct ExFusionOptions {
  // Declared first: TORCH_ARG leaves what follows it private.
  template <class Fields>
  void fields(Fields& f);
  // The keys of the fusion weights alone (variant to router), which ExFusion over other
  // experts (ders-exfusion) shares.
  template <class Fields>
  void fusion_fields(Fields& f);
  // Cross-field checks (none today beyond the fields' own); errors name `at`'s path.
  void validate(const config::Location& at) const;
  std::shared_ptr<FeedForwardImpl> build(const FfnSite& site) const;
  std::string run_name() const;  // "exfusion-mb-n4"
  // ExFusion's memory traffic beyond the dense FFN's per training step, at its floor
  // (train/step_benchmark.h explains the terms).
  double extra_step_bytes(const FfnSite& site, double tokens, int64_t gemm_bytes) const;

  TORCH_ARG(FusionVariant, variant) = FusionVariant::kMemoryBank;
  TORCH_ARG(int64_t, num_experts) = 4;
  TORCH_ARG(double, momentum) = 0.95;
  TORCH_ARG(double, bank_init) = 0.0;
  // Table IX: one router for both expert sets (default) or a second one for the down set,
  // fed by the hidden activation. Only meaningful for the memory bank.
  TORCH_ARG(bool, router_per_set) = false;
  TORCH_ARG(ExpertInit, expert_init) = ExpertInit::kIndependent;
  TORCH_ARG(double, expert_noise_std) = 1e-3;
};

template <class Fields>
void ExFusionOptions::fields(Fields& f) {
  fusion_fields(f);
  f("expert_init", expert_init(), "how the N experts start: independent, copy or copy+noise",
    expert_init_names());
  f("expert_noise_std", expert_noise_std(), "noise std of copy+noise",
    config::non_negative<double>());
}

template <class Fields>
void ExFusionOptions::fusion_fields(Fields& f) {
  f("variant", variant(), "fusion weights: sw (static 1/N), dw (learned), mb (memory bank)",
    fusion_variant_names());
  f("num_experts", num_experts(), "experts per expert set N", config::in_range<int64_t>(1, 1024));
  f("momentum", momentum(), "memory-bank momentum δ", config::in_range<double>(0.0, 1.0, true));
  f("bank_init", bank_init(), "initial value of the memory bank M (paper IV-D: 0)");
  f("router", router_per_set(), "mb router: shared (one per layer) or per-set (one per set)",
    config::Choices<bool>{{{"shared", false}, {"per-set", true}}});
}

// A layer's fusion weights m for the variant of `options`, over experts of `in_features` inputs.
std::shared_ptr<FusionWeightsImpl> make_fusion_weights(const ExFusionOptions& options,
                                                       int64_t in_features);

// The banks of one ExFusion FFN in its form: fc1 into the hidden units (the gated form's up),
// gate beside it (gated form only, else null), fc2 out of them.
template <class Bank>
struct FormBanks {
  const FfnForm& form;
  const Bank* gate;
  const Bank& fc1;
  const Bank& fc2;
  // The form's depthwise grid convolution (PVT v2), one dense layer the experts share; or null.
  const DepthwiseGridConvImpl* grid_conv = nullptr;
};

// ExFusion's function over any expert banks whose fuse(m) gives (W̄, b̄): the forward, the
// dense form with the final fusion weights, and the fusion-weight metrics. One set of fusion
// weights mixes the sets into the hidden units; `fusion_down` (null unless the memory bank has
// a router per set) mixes the set out of them.
template <class Bank>
torch::Tensor fused_experts_forward(const torch::Tensor& x, FusionWeightsImpl& fusion,
                                    FusionWeightsImpl* fusion_down, const FormBanks<Bank>& banks) {
  const auto m_up = fusion.forward(x);
  const auto [w1, b1] = banks.fc1.fuse(m_up);
  torch::Tensor gate_out;
  if (banks.gate != nullptr) {
    const auto [wg, bg] = banks.gate->fuse(m_up);
    gate_out = linear(x, wg, bg);
  }
  auto up = linear(x, w1, b1);
  if (banks.grid_conv != nullptr) up = banks.grid_conv->forward(up);
  const auto h = hidden_activation(banks.form, up, gate_out);
  const auto m_down = fusion_down != nullptr ? fusion_down->forward(h) : m_up;
  const auto [w2, b2] = banks.fc2.fuse(m_down);
  return linear(h, w2, b2);
}

template <class Bank>
std::vector<std::pair<std::string, torch::Tensor>> fused_experts_dense_tensors(
    const FusionWeightsImpl& fusion, const FusionWeightsImpl* fusion_down,
    const FormBanks<Bank>& banks, const torch::Device& device) {
  torch::NoGradGuard no_grad;
  const auto m_up = fusion.final_weights().to(device);
  const auto m_down =
      (fusion_down ? fusion_down->final_weights() : fusion.final_weights()).to(device);
  std::vector<std::pair<std::string, torch::Tensor>> out;
  // Fused outside autocast, in the experts' own dtype: the dense model's parameters.
  const auto add = [&](const std::string& name, const Bank& bank, const torch::Tensor& m) {
    const auto [weight, bias] = bank.fuse(m);
    out.emplace_back(name + ".weight", weight);
    if (bias.defined()) out.emplace_back(name + ".bias", bias);
  };
  if (banks.gate != nullptr) add(banks.form.gate_name, *banks.gate, m_up);
  add(banks.form.up_name, banks.fc1, m_up);
  if (banks.grid_conv != nullptr) {
    out.emplace_back("dwconv.weight", banks.grid_conv->weight.detach());
    out.emplace_back("dwconv.bias", banks.grid_conv->bias.detach());
  }
  add(banks.form.down_name, banks.fc2, m_down);
  return out;
}

// The fusion weights in use now, by name: "m", or "m_up" and "m_down" with a router per set.
std::vector<std::pair<std::string, torch::Tensor>> fusion_weights_of(
    const FusionWeightsImpl& fusion, const FusionWeightsImpl* fusion_down);
// {"fusion_weights": {name: [...]}} of fusion_weights_of.
nlohmann::json fusion_weights_metrics(const FusionWeightsImpl& fusion,
                                      const FusionWeightsImpl* fusion_down);

class ExFusionMlpImpl : public FeedForwardImpl,
                        public HasDenseForm,
                        public ReportsMetrics,
                        public HasExpertSets {
 public:
  ExFusionMlpImpl(int64_t dim, int64_t hidden, ExFusionOptions options,
                  FfnForm form = FfnForm::plain());
  torch::Tensor forward(const torch::Tensor& x) override;
  // fc1/fc2 weight and bias fused with the final fusion weights (eval mode's m).
  std::vector<std::pair<std::string, torch::Tensor>> dense_tensors() const override;
  // {"fusion_weights": {"m": [...]}} ("m_up"/"m_down" with a per-set router).
  nlohmann::json metrics() const override;
  // The fusion weights in use now, by name.
  std::vector<std::pair<std::string, torch::Tensor>> fusion_weights() const;
  ExpertSets expert_sets() const override;

  ExFusionOptions options;
  FfnForm form;
  // Registered under the form's names: fc1 into the hidden units (the gated form's up), gate
  // beside it (gated form only), fc2 out of them.
  ExpertBank fc1{nullptr}, gate{nullptr}, fc2{nullptr};
  DepthwiseGridConv dwconv{nullptr};  // the form's depthwise grid convolution (PVT v2), shared
  std::shared_ptr<FusionWeightsImpl> fusion;       // m for fc1, and for fc2 when shared
  std::shared_ptr<FusionWeightsImpl> fusion_down;  // per-set router only
};
TORCH_MODULE(ExFusionMlp);

}  // namespace exfusion
