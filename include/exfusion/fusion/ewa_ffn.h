// The FFN kind "ewa": Experts Weights Averaging (Huang et al. 2023, arXiv 2308.06093), the prior
// art closest to ExFusion. N full FFN experts; in training each step's tokens are split by a
// random uniform partition into N equal groups, one per expert (no router), and after every
// optimizer step each expert is pulled towards the others (the paper's Eq. 6). The experts'
// mean never moves under Eq. 6, so evaluation and the dense form use that mean.
#pragma once
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "exfusion/config/fields.h"
#include "exfusion/fusion/expert_bank.h"
#include "exfusion/fusion/token_partition.h"
#include "exfusion/layers/capabilities.h"
#include "exfusion/layers/depthwise_grid_conv.h"
#include "exfusion/layers/ffn_kind.h"

namespace exfusion {

struct EwaOptions {
  // Declared first: TORCH_ARG leaves what follows it private.
  template <class Fields>
  void fields(Fields& f) {
    f("num_experts", num_experts(), "experts N (at least 2)", config::in_range<int64_t>(2, 1024));
    f("share_rate", share_rate(),
      "share rate β of Eq. (6): each expert keeps 1 − β of itself and takes β/(N − 1) of each "
      "other expert after every optimizer step",
      config::in_range<double>(0.0, 1.0));
    f("partition", partition(),
      "what one random uniform partition splits into N equal groups: batch (all the step's "
      "tokens together) or sample (each sample's tokens)",
      partition_scope_names());
    f("expert_init", expert_init(), "how the N experts start: independent, copy or copy+noise",
      expert_init_names());
    f("expert_noise_std", expert_noise_std(), "noise std of copy+noise",
      config::non_negative<double>());
  }
  std::shared_ptr<FeedForwardImpl> build(const FfnSite& site) const;
  std::string run_name() const;  // "ewa-n4"
  // The averaging pass over every expert set and the tokens' copies into and out of the groups.
  double extra_step_bytes(const FfnSite& site, double tokens, int64_t gemm_bytes) const;

  TORCH_ARG(int64_t, num_experts) = 4;
  TORCH_ARG(double, share_rate) = 0.3;
  TORCH_ARG(PartitionScope, partition) = PartitionScope::kBatch;
  TORCH_ARG(ExpertInit, expert_init) = ExpertInit::kCopy;
  TORCH_ARG(double, expert_noise_std) = 1e-3;
};

// Eq. (6) on stacked experts [N, ...] in place: E_i ← (1 − β)·E_i + Σ_{j≠i} β/(N − 1)·E_j,
// computed as the same affine map E_i ← Ē + (1 − β·N/(N − 1))·(E_i − Ē), which leaves the mean Ē
// where it was (up to rounding).
void average_experts_(torch::Tensor& experts, double share_rate);

// How far N stacked experts [N, ...] are apart: √(mean_i ‖E_i − Ē‖²) / ‖Ē‖ (0 when all equal).
double expert_spread(const torch::Tensor& experts);

class EwaMlpImpl : public FeedForwardImpl,
                   public HasDenseForm,
                   public HasExpertSets,
                   public ReportsMetrics,
                   public UpdatesAfterOptimizerStep,
                   public BlocksCudaGraphCapture {
 public:
  EwaMlpImpl(int64_t dim, int64_t hidden, EwaOptions options, FfnForm form = FfnForm::plain());
  // Training: each token through its group's expert (a fresh partition per call). Evaluation:
  // the dense FFN of the experts' mean.
  torch::Tensor forward(const torch::Tensor& x) override;
  // The experts' mean, layer by layer: what evaluation runs.
  std::vector<std::pair<std::string, torch::Tensor>> dense_tensors() const override;
  ExpertSets expert_sets() const override;
  // {"expert_spread": {layer: spread}}: how far the experts are apart after the last averaging.
  nlohmann::json metrics() const override;
  // Eq. (6) on every expert set's weights and biases.
  void after_optimizer_step() override;
  std::string cuda_graph_obstacle() const override {
    return "is EWA, which draws a new token partition on the host every step";
  }
  // The partition the last training forward drew (tests read it).
  const TokenPartition& last_partition() const { return last_partition_; }

  EwaOptions options;
  FfnForm form;
  // Registered under the form's names: fc1 into the hidden units (the gated form's up), gate
  // beside it (gated form only), fc2 out of them.
  ExpertBank fc1{nullptr}, gate{nullptr}, fc2{nullptr};
  DepthwiseGridConv dwconv{nullptr};  // the form's depthwise grid convolution (PVT v2), shared

 private:
  // The banks in the form's order (the gate first where there is one), each with its name.
  std::vector<std::pair<std::string, ExpertBankImpl*>> banks() const;
  torch::Tensor partitioned_forward(const torch::Tensor& x);
  torch::Tensor mean_forward(const torch::Tensor& x) const;

  TokenPartition last_partition_;
};
TORCH_MODULE(EwaMlp);

}  // namespace exfusion
