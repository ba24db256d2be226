// RMS norm (see rms_norm.h).
#include "exfusion/layers/rms_norm.h"

namespace exfusion {

RMSNormImpl::RMSNormImpl(int64_t dim, double eps_) : eps(eps_) {
  weight = register_parameter("weight", torch::ones({dim}));
}

torch::Tensor RMSNormImpl::forward(const torch::Tensor& x) {
  const auto variance = x.to(torch::kFloat32).pow(2).mean(-1, /*keepdim=*/true);
  auto normalised = x * torch::rsqrt(variance + eps);
  // A half-precision weight keeps its dtype, as Hugging Face's norms do.
  if (weight.scalar_type() == torch::kBFloat16 || weight.scalar_type() == torch::kHalf) {
    normalised = normalised.to(weight.scalar_type());
  }
  return weight * normalised;
}

}  // namespace exfusion
