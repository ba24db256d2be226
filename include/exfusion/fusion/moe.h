// Vanilla top-k mixture of experts (MoE-N-k, SPEC §2), the sparse baseline ExFusion is
// compared with: N full FFN experts, a bias-free router D→N, softmax, top-k with the k gates
// renormalised, a capacity per expert with token dropping, and the Switch/GShard
// load-balancing loss N·Σ_e f_e·P_e. Dispatch goes through fixed [N, capacity] buffers, so a
// step has static shapes and no host synchronisation.
#pragma once
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <memory>

#include "exfusion/config/fields.h"
#include "exfusion/fusion/expert_bank.h"
#include "exfusion/layers/capabilities.h"
#include "exfusion/layers/ffn_kind.h"
#include "exfusion/layers/linear.h"

namespace exfusion {

// The options of the FFN kind "moe".
struct MoeOptions {
  // Declared first: TORCH_ARG leaves what follows it private.
  template <class Fields>
  void fields(Fields& f) {
    f("num_experts", num_experts(), "experts N", config::in_range<int64_t>(1, 1024));
    f("top_k", top_k(), "experts per token k (1..N)", config::at_least<int64_t>(1));
    f("capacity_factor", capacity_factor(), "capacity factor; 0 keeps every assignment",
      config::non_negative<double>());
    f("aux_loss_coef", aux_loss_coef(), "load-balancing loss coefficient",
      config::non_negative<double>());
    f("renormalize_top1", renormalize_top1(),
      "with top_k 1, divide the gate by itself (1) as k > 1 renormalises its k gates, so that "
      "experts upcycled as copies give the dense FFN's output; false keeps Switch's gate p");
  }
  // top_k at most num_experts; errors name `at`'s path.
  void validate(const config::Location& at) const;
  std::shared_ptr<FeedForwardImpl> build(const FfnSite& site) const;
  std::string run_name() const;  // "moe-n4-k2"
  // Each token runs top_k experts, and the router scores all N.
  double forward_macs_per_token(const FfnSite& site) const;

  TORCH_ARG(int64_t, num_experts) = 4;
  TORCH_ARG(int64_t, top_k) = 2;
  // Each expert takes at most ceil(capacity_factor · k · tokens / N) assignments, the
  // earlier ones (all first choices before second choices); 0 keeps every assignment.
  TORCH_ARG(double, capacity_factor) = 1.25;
  TORCH_ARG(double, aux_loss_coef) = 0.01;
  TORCH_ARG(bool, renormalize_top1) = false;
};

// The top-k routing, dispatch to capacity slots, combine and balance loss of MoE-N-k over any
// N experts; a kind gives its experts' stacked weights (full FFNs, DeRS deltas) in the FFN's
// form, registered under the form's names. No dense form: a mixture of experts cannot be fused
// (fuse says so).
class TopKMixtureImpl : public FeedForwardImpl,
                        public AddsAuxiliaryLoss,
                        public ReportsMetrics,
                        public HasExpertSets {
 public:
  TopKMixtureImpl(int64_t dim, MoeOptions options, FfnForm form);
  torch::Tensor forward(const torch::Tensor& x) override;
  // aux_loss_coef · N·Σ_e f_e·P_e of the last forward pass (differentiable in the router).
  torch::Tensor auxiliary_loss() const override { return aux_loss_; }
  // {"routing": {"dropped_fraction": …, "aux_loss": …}} of the last forward pass; {} before one.
  nlohmann::json metrics() const override;
  // [share of the last forward pass's assignments dropped for capacity, its balance loss],
  // detached. One tensor updated in place, so an eager forward and the replays of a captured
  // CUDA graph write to the same place.
  torch::Tensor routing_stats() const { return routing_stats_; }
  torch::Tensor dropped_fraction() const { return routing_stats_[0]; }
  // The form's sets and the router.
  ExpertSets expert_sets() const override;

  MoeOptions options;
  FfnForm form;
  Linear router{nullptr};

 protected:
  // The N experts of each linear layer: weights [N, out, in] and biases [N, out] (undefined
  // without biases); the gate's only in the gated form.
  struct StackedExperts {
    torch::Tensor up_weight, up_bias, down_weight, down_bias, gate_weight, gate_bias;
  };
  virtual StackedExperts stacked_experts() const = 0;
  // The router's init, normal(0, 0.02); called by a kind once its experts are built, so that
  // the experts' init draws come first, as they always have.
  void reset_router();

 private:
  torch::Tensor aux_loss_, routing_stats_;
};

// The FFN kind "moe": every expert a full FFN.
class MoeMlpImpl : public TopKMixtureImpl {
 public:
  MoeMlpImpl(int64_t dim, int64_t hidden, MoeOptions options, FfnForm form = FfnForm::plain());

  // fc1 into the hidden units (the gated form's up), gate (gated form only), fc2 out of them.
  ExpertBank fc1{nullptr}, gate{nullptr}, fc2{nullptr};

 protected:
  StackedExperts stacked_experts() const override;
};
TORCH_MODULE(MoeMlp);

}  // namespace exfusion
