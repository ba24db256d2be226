// Truncated normal init (see init.h).
#include "exfusion/util/init.h"

#include <cmath>

namespace exfusion {

void trunc_normal_(const torch::Tensor& tensor, double std) {
  torch::NoGradGuard no_grad;
  const auto cdf = [](double x) { return 0.5 * (1.0 + std::erf(x / std::sqrt(2.0))); };
  const double lower = cdf(-2.0), upper = cdf(2.0);
  tensor.uniform_(2.0 * lower - 1.0, 2.0 * upper - 1.0);
  tensor.erfinv_();
  tensor.mul_(std * std::sqrt(2.0));
  tensor.clamp_(-2.0 * std, 2.0 * std);
}

void init_normal_(const torch::Tensor& tensor, double std, bool truncated) {
  torch::NoGradGuard no_grad;
  if (truncated) {
    trunc_normal_(tensor, std);
  } else {
    tensor.normal_(0.0, std);
  }
}

}  // namespace exfusion
