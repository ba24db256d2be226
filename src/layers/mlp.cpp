// The dense FFN (see mlp.h).
#include "exfusion/layers/mlp.h"

#include "exfusion/layers/linear.h"
#include "exfusion/util/init.h"

namespace exfusion {

torch::Tensor exact_gelu(const torch::Tensor& x) { return at::gelu(x); }

MlpImpl::MlpImpl(int64_t dim, int64_t hidden) {
  fc1 = register_module("fc1", Linear(dim, hidden));
  fc2 = register_module("fc2", Linear(hidden, dim));
  for (const auto& linear : {fc1, fc2}) init_vit_linear(linear);
}

torch::Tensor MlpImpl::forward(const torch::Tensor& x) {
  return fc2->forward(exact_gelu(fc1->forward(x)));
}

std::vector<std::pair<std::string, torch::Tensor>> MlpImpl::dense_tensors() const {
  return {{"fc1.weight", fc1->weight.detach()},
          {"fc1.bias", fc1->bias.detach()},
          {"fc2.weight", fc2->weight.detach()},
          {"fc2.bias", fc2->bias.detach()}};
}

std::shared_ptr<FeedForwardImpl> DenseFfnOptions::build(int64_t dim, int64_t hidden) const {
  return std::make_shared<MlpImpl>(dim, hidden);
}

}  // namespace exfusion
