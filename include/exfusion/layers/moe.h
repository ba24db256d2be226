// Vanilla top-k mixture of experts (MoE-N-k, SPEC §2), the sparse baseline ExFusion is
// compared with: N full FFN experts, a bias-free router D→N, softmax, top-k with the k gates
// renormalised, a capacity per expert with token dropping, and the Switch/GShard
// load-balancing loss N·Σ_e f_e·P_e. Dispatch goes through fixed [N, capacity] buffers, so a
// step has static shapes and no host synchronisation.
#pragma once
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <memory>

#include "exfusion/fusion/expert_bank.h"
#include "exfusion/layers/ffn.h"

namespace exfusion {

struct MoeOptions {
  // Throws InputError naming ffn.num_experts, ffn.top_k, ffn.capacity_factor or
  // ffn.aux_loss_coef. Declared first: TORCH_ARG leaves what follows it private.
  void validate() const;

  TORCH_ARG(int64_t, num_experts) = 4;
  TORCH_ARG(int64_t, top_k) = 2;
  // Each expert takes at most ceil(capacity_factor · k · tokens / N) assignments, the
  // earlier ones (all first choices before second choices); 0 keeps every assignment.
  TORCH_ARG(double, capacity_factor) = 1.25;
  TORCH_ARG(double, aux_loss_coef) = 0.01;
};

class MoeMlpImpl : public FeedForwardImpl {
 public:
  MoeMlpImpl(int64_t dim, int64_t hidden, MoeOptions options);
  torch::Tensor forward(const torch::Tensor& x) override;
  // A mixture of experts has no dense equivalent: throws InputError.
  std::shared_ptr<MlpImpl> to_dense() const override;
  // aux_loss_coef · N·Σ_e f_e·P_e of the last forward pass (differentiable in the router).
  torch::Tensor auxiliary_loss() const override { return aux_loss_; }
  // [share of the last forward pass's assignments dropped for capacity, its balance loss],
  // detached. One tensor updated in place, so an eager forward and the replays of a captured
  // CUDA graph write to the same place.
  torch::Tensor routing_stats() const override { return routing_stats_; }
  torch::Tensor dropped_fraction() const { return routing_stats_[0]; }

  MoeOptions options;
  torch::nn::Linear router{nullptr};
  ExpertBank fc1{nullptr}, fc2{nullptr};

 private:
  torch::Tensor aux_loss_, routing_stats_;
};
TORCH_MODULE(MoeMlp);

}  // namespace exfusion
