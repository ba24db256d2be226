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
#include "exfusion/layers/ffn_kind.h"

namespace exfusion {

struct ExFusionOptions {
  // Declared first: TORCH_ARG leaves what follows it private.
  template <class Fields>
  void fields(Fields& f);
  // Cross-field checks (none today beyond the fields' own); errors name `at`'s path.
  void validate(const config::Location& at) const;
  std::shared_ptr<FeedForwardImpl> build(int64_t dim, int64_t hidden) const;
  std::string run_name() const;  // "exfusion-mb-n4"
  // ExFusion's memory traffic beyond the dense FFN's per training step, at its floor
  // (train/step_benchmark.h explains the terms).
  double extra_step_bytes(int64_t dim, int64_t hidden, double tokens, int64_t gemm_bytes) const;

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

const config::Choices<FusionVariant>& fusion_variant_names();
const config::Choices<ExpertInit>& expert_init_names();

template <class Fields>
void ExFusionOptions::fields(Fields& f) {
  f("variant", variant(), "fusion weights: sw (static 1/N), dw (learned), mb (memory bank)",
    fusion_variant_names());
  f("num_experts", num_experts(), "experts per expert set N", config::in_range<int64_t>(1, 1024));
  f("momentum", momentum(), "memory-bank momentum δ", config::in_range<double>(0.0, 1.0, true));
  f("bank_init", bank_init(), "initial value of the memory bank M (paper IV-D: 0)");
  f("router", router_per_set(), "mb router: shared (one per layer) or per-set (one per set)",
    config::Choices<bool>{{{"shared", false}, {"per-set", true}}});
  f("expert_init", expert_init(), "how the N experts start: independent, copy or copy+noise",
    expert_init_names());
  f("expert_noise_std", expert_noise_std(), "noise std of copy+noise",
    config::non_negative<double>());
}

class ExFusionMlpImpl : public FeedForwardImpl, public HasDenseForm, public ReportsMetrics {
 public:
  ExFusionMlpImpl(int64_t dim, int64_t hidden, ExFusionOptions options);
  torch::Tensor forward(const torch::Tensor& x) override;
  // fc1/fc2 weight and bias fused with the final fusion weights (eval mode's m).
  std::vector<std::pair<std::string, torch::Tensor>> dense_tensors() const override;
  // {"fusion_weights": {"m": [...]}} ("m_up"/"m_down" with a per-set router).
  nlohmann::json metrics() const override;
  // The fusion weights in use now, by name.
  std::vector<std::pair<std::string, torch::Tensor>> fusion_weights() const;

  ExFusionOptions options;
  ExpertBank fc1{nullptr}, fc2{nullptr};
  std::shared_ptr<FusionWeightsImpl> fusion;       // m for fc1, and for fc2 when shared
  std::shared_ptr<FusionWeightsImpl> fusion_down;  // per-set router only
};
TORCH_MODULE(ExFusionMlp);

}  // namespace exfusion
