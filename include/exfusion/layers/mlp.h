// The dense Transformer FFN y = fc2(GELU(fc1 x)) with timm's names, and its FFN kind "dense":
// the baseline every other kind is compared with and fuses back into.
#pragma once
#include <torch/nn/pimpl.h>

#include <memory>
#include <string>

#include "exfusion/layers/capabilities.h"
#include "exfusion/layers/ffn_kind.h"
#include "exfusion/layers/linear.h"

namespace exfusion {

class MlpImpl : public FeedForwardImpl, public HasDenseForm {
 public:
  MlpImpl(int64_t dim, int64_t hidden);
  torch::Tensor forward(const torch::Tensor& x) override;
  // Already dense: its own tensors.
  std::vector<std::pair<std::string, torch::Tensor>> dense_tensors() const override;

  Linear fc1{nullptr}, fc2{nullptr};
};
TORCH_MODULE(Mlp);

// The exact (erf) GELU timm's ViT uses, shared by every FFN kind.
torch::Tensor exact_gelu(const torch::Tensor& x);

// Kind "dense": no options of its own.
struct DenseFfnOptions {
  template <class Fields>
  void fields(Fields& /*f*/) {}
  std::shared_ptr<FeedForwardImpl> build(int64_t dim, int64_t hidden) const;
  std::string run_name() const { return "dense"; }
};

}  // namespace exfusion
