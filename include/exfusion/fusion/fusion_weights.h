// The three ways ExFusion gets a layer's fusion weights m ∈ R^N (SPEC §1): static 1/N
// (`sw`), N learned scalars (`dw`), and a memory bank fed by a router (`mb`). Each is a
// module whose forward returns m; in eval mode every variant returns a batch-free m.
#pragma once
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>
#include "exfusion/config/fields.h"
#include "exfusion/layers/capabilities.h"
#include "exfusion/layers/linear.h"

#include <string>

namespace exfusion {

enum class FusionVariant { kStatic, kLearned, kMemoryBank };

// sw (static 1/N), dw (learned), mb (memory bank): the config's names.
const config::Choices<FusionVariant>& fusion_variant_names();
std::string to_string(FusionVariant variant);

class FusionWeightsImpl : public torch::nn::Module {
 public:
  // `x` is the input of the expert set, [..., D]; only the memory bank looks at it.
  virtual torch::Tensor forward(const torch::Tensor& x) = 0;
  // The weights a fused dense model uses: the eval-mode m, detached, float32.
  virtual torch::Tensor final_weights() const = 0;
};

class StaticWeightsImpl : public FusionWeightsImpl {
 public:
  explicit StaticWeightsImpl(int64_t num_experts);
  torch::Tensor forward(const torch::Tensor& x) override;
  torch::Tensor final_weights() const override;

 private:
  int64_t num_experts_;
};
TORCH_MODULE(StaticWeights);

// Eq. 9: m is a free parameter, initialised to 1/N and used as it is (no softmax).
class LearnedWeightsImpl : public FusionWeightsImpl, public ExemptFromWeightDecay {
 public:
  explicit LearnedWeightsImpl(int64_t num_experts);
  torch::Tensor forward(const torch::Tensor& x) override;
  torch::Tensor final_weights() const override;
  // Mixing coefficients, not weights to shrink (SPEC §1).
  std::vector<std::string> exempt_from_weight_decay() const override { return {"weights"}; }

  torch::Tensor weights;  // [N]
};
TORCH_MODULE(LearnedWeights);

struct MemoryBankOptions {
  MemoryBankOptions(int64_t num_experts, int64_t in_features)
      : num_experts_(num_experts), in_features_(in_features) {}
  TORCH_ARG(int64_t, num_experts);
  TORCH_ARG(int64_t, in_features);
  TORCH_ARG(double, momentum) = 0.95;  // δ
  TORCH_ARG(double, bank_init) = 0.0;  // M's initial value (paper IV-D: zeros)
};

// Training: w = mean over batch and tokens of softmax(router(x)); m = δ·M + (1−δ)·w, with
// gradients reaching the router through (1−δ)·w only; M then holds m, detached.
// Eval: m = M, whatever the batch.
class MemoryBankWeightsImpl : public FusionWeightsImpl {
 public:
  explicit MemoryBankWeightsImpl(MemoryBankOptions options);
  torch::Tensor forward(const torch::Tensor& x) override;
  torch::Tensor final_weights() const override;

  // The batch statistic w; exposed so data parallelism can average it over ranks.
  torch::Tensor router_weights(const torch::Tensor& x);

  MemoryBankOptions options;
  Linear router{nullptr};
  torch::Tensor bank;  // [N], buffer
};
TORCH_MODULE(MemoryBankWeights);

}  // namespace exfusion
