// The dense Transformer FFN with its site's form: plain y = fc2(act(fc1 x)) with timm's names,
// or gated y = fc2(act(gate x) ⊙ up x) (T5 v1.1, Llama), and its FFN kind "dense": the
// baseline every other kind is compared with and fuses back into.
#pragma once
#include <torch/nn/pimpl.h>

#include <memory>
#include <string>

#include "exfusion/layers/capabilities.h"
#include "exfusion/layers/depthwise_grid_conv.h"
#include "exfusion/layers/ffn_kind.h"
#include "exfusion/layers/ffn_site.h"
#include "exfusion/layers/linear.h"

namespace exfusion {

class MlpImpl : public FeedForwardImpl, public HasDenseForm {
 public:
  MlpImpl(int64_t dim, int64_t hidden);  // timm's plain GELU Mlp
  MlpImpl(int64_t dim, int64_t hidden, FfnForm form);
  torch::Tensor forward(const torch::Tensor& x) override;
  // Already dense: its own tensors.
  std::vector<std::pair<std::string, torch::Tensor>> dense_tensors() const override;

  FfnForm form;
  // fc1 into the hidden units (the gated form's up), gate beside it (gated only), fc2 out of
  // them; registered under the form's names.
  Linear fc1{nullptr}, gate{nullptr}, fc2{nullptr};
  DepthwiseGridConv dwconv{nullptr};  // the form's depthwise grid convolution (PVT v2) only
};
TORCH_MODULE(Mlp);

// The exact (erf) GELU timm's ViT uses.
torch::Tensor exact_gelu(const torch::Tensor& x);

// An FFN's hidden activation from its into-hidden outputs: act(up), or act(gate) ⊙ up.
torch::Tensor hidden_activation(const FfnForm& form, const torch::Tensor& up,
                                const torch::Tensor& gate);

// Kind "dense": no options of its own; the site says its form.
struct DenseFfnOptions {
  template <class Fields>
  void fields(Fields& /*f*/) {}
  std::shared_ptr<FeedForwardImpl> build(const FfnSite& site) const;
  std::string run_name() const { return "dense"; }
};

}  // namespace exfusion
