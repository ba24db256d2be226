// The Transformer FFN y = W_d(GELU(W_u x)) in its kinds: the plain dense `Mlp` (timm's
// names fc1/fc2) and `ExFusionMlp`, whose fc1/fc2 are expert banks fused by one set of
// fusion weights per layer (the MoE baseline is layers/moe.h). Every kind but MoE can hand
// back the dense Mlp it is equivalent to.
#pragma once
#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <memory>
#include <string>
#include <vector>

#include "exfusion/fusion/expert_bank.h"
#include "exfusion/fusion/fusion_weights.h"

namespace exfusion {

class MlpImpl;

class FeedForwardImpl : public torch::nn::Module {
 public:
  virtual torch::Tensor forward(const torch::Tensor& x) = 0;
  // A dense FFN whose eval output equals this FFN's eval output (a copy for dense FFNs).
  virtual std::shared_ptr<MlpImpl> to_dense() const = 0;
  // The fusion weights in use now, by name (e.g. "m" or "m_up"/"m_down"); empty if none.
  virtual std::vector<std::pair<std::string, torch::Tensor>> fusion_weights() const { return {}; }
  // A loss term the FFN adds to the training loss (MoE load balancing); undefined if none.
  virtual torch::Tensor auxiliary_loss() const { return {}; }
  // Routing statistics of the last forward pass as float32 [dropped share of assignments,
  // balance loss] (MoE); undefined for FFNs that do not route.
  virtual torch::Tensor routing_stats() const { return {}; }
};

class MlpImpl : public FeedForwardImpl {
 public:
  MlpImpl(int64_t dim, int64_t hidden);
  torch::Tensor forward(const torch::Tensor& x) override;
  std::shared_ptr<MlpImpl> to_dense() const override;

  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
};
TORCH_MODULE(Mlp);

struct ExFusionOptions {
  // Throws InputError naming ffn.num_experts (< 1) or ffn.momentum (outside [0, 1)).
  // Declared first: TORCH_ARG leaves what follows it private.
  void validate() const;

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

class ExFusionMlpImpl : public FeedForwardImpl {
 public:
  ExFusionMlpImpl(int64_t dim, int64_t hidden, ExFusionOptions options);
  torch::Tensor forward(const torch::Tensor& x) override;
  std::shared_ptr<MlpImpl> to_dense() const override;
  std::vector<std::pair<std::string, torch::Tensor>> fusion_weights() const override;

  ExFusionOptions options;
  ExpertBank fc1{nullptr}, fc2{nullptr};
  std::shared_ptr<FusionWeightsImpl> fusion;       // m for fc1, and for fc2 when shared
  std::shared_ptr<FusionWeightsImpl> fusion_down;  // per-set router only
};
TORCH_MODULE(ExFusionMlp);

}  // namespace exfusion
