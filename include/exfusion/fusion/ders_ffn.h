// The DeRS upcycling FFN kinds (SPEC §2): experts that share a trainable base W_b and each add
// a sparse or low-rank delta (fusion/delta_expert_bank.h), routed as the top-k MoE
// ("ders-moe", the DeRS paper's setting) or fused by ExFusion's fusion weights
// ("ders-exfusion", our own combination: ExFusion whose N experts cost a fraction of N FFNs).
#pragma once
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <memory>
#include <string>
#include <vector>

#include "exfusion/config/fields.h"
#include "exfusion/fusion/delta_expert_bank.h"
#include "exfusion/fusion/exfusion_ffn.h"
#include "exfusion/fusion/moe.h"

namespace exfusion {

// The delta keys both DeRS kinds share.
struct DersDeltaOptions {
  template <class Fields>
  void fields(Fields& f) {
    f("delta", form, "each expert's delta: sparse (fixed random positions) or low-rank (A·B)",
      delta_form_names());
    f("delta_keep", keep_ratio,
      "sparse: share 1 − p of each expert's weight positions its delta may change",
      config::in_range<double>(0.0, 1.0));
    f("delta_rank", rank, "low-rank: rank r of Δ = A·B", config::in_range<int64_t>(1, 65536));
  }
  // The bank standing for `form`'s layer `layer` (its bias and init).
  DeltaExpertBankOptions bank(int64_t num_experts, int64_t in, int64_t out, const FfnForm& form,
                              const std::string& layer) const;
  std::string run_name() const;  // "sparse0.1", "lowrank4"

  DeltaForm form = DeltaForm::kSparse;
  double keep_ratio = 0.1;
  int64_t rank = 4;
};

// The options of "ders-moe": every key of "moe", and the delta's.
struct DersMoeOptions {
  template <class Fields>
  void fields(Fields& f) {
    moe.fields(f);
    delta.fields(f);
  }
  void validate(const config::Location& at) const { moe.validate(at); }
  std::shared_ptr<FeedForwardImpl> build(const FfnSite& site) const;
  std::string run_name() const;  // "ders-moe-n4-k2-sparse0.1"
  double forward_macs_per_token(const FfnSite& site) const {
    return moe.forward_macs_per_token(site);
  }

  MoeOptions moe;
  DersDeltaOptions delta;
};

// The options of "ders-exfusion": ExFusion's fusion keys (variant, N, momentum, bank, router;
// not expert_init: DeRS experts start as the base), and the delta's.
struct DersExFusionOptions {
  template <class Fields>
  void fields(Fields& f) {
    exfusion.fusion_fields(f);
    delta.fields(f);
  }
  void validate(const config::Location& at) const { exfusion.validate(at); }
  std::shared_ptr<FeedForwardImpl> build(const FfnSite& site) const;
  std::string run_name() const;  // "ders-exfusion-mb-n4-lowrank4"

  ExFusionOptions exfusion;
  DersDeltaOptions delta;
};

class DersMoeMlpImpl : public TopKMixtureImpl {
 public:
  DersMoeMlpImpl(int64_t dim, int64_t hidden, DersMoeOptions options,
                 FfnForm form = FfnForm::plain());

  DersDeltaOptions delta;
  // fc1 into the hidden units (the gated form's up), gate (gated form only), fc2 out of them.
  DeltaExpertBank fc1{nullptr}, gate{nullptr}, fc2{nullptr};

 protected:
  StackedExperts stacked_experts() const override;
};
TORCH_MODULE(DersMoeMlp);

class DersExFusionMlpImpl : public FeedForwardImpl,
                            public HasDenseForm,
                            public ReportsMetrics,
                            public HasExpertSets {
 public:
  DersExFusionMlpImpl(int64_t dim, int64_t hidden, DersExFusionOptions options,
                      FfnForm form = FfnForm::plain());
  torch::Tensor forward(const torch::Tensor& x) override;
  // W_b + Σ m_i Δ_i with the final fusion weights, under the dense FFN's names.
  std::vector<std::pair<std::string, torch::Tensor>> dense_tensors() const override;
  nlohmann::json metrics() const override;
  ExpertSets expert_sets() const override;

  DersExFusionOptions options;
  FfnForm form;
  DeltaExpertBank fc1{nullptr}, gate{nullptr}, fc2{nullptr};
  DepthwiseGridConv dwconv{nullptr};  // the form's depthwise grid convolution (PVT v2), shared
  std::shared_ptr<FusionWeightsImpl> fusion, fusion_down;
};
TORCH_MODULE(DersExFusionMlp);

}  // namespace exfusion
