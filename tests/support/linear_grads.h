// Forward and backward of a linear-layer function on fresh leaves, shared by the CPU tests of
// the bias-gradient node and the GPU tests of its cuBLASLt epilogue.
#pragma once
#include <torch/types.h>

namespace exfusion::testing {

struct Grads {
  torch::Tensor y, dx, dweight, dbias;
};

// Forward and backward of `f` on fresh leaves sharing x's, weight's and bias's storage (a
// view keeps its offset), with a fixed output gradient.
template <typename F>
Grads run(F f, const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias,
          const torch::Tensor& dy) {
  const auto xl = x.detach().requires_grad_(true);
  const auto wl = weight.detach().requires_grad_(true);
  const auto bl = bias.detach().requires_grad_(true);
  const auto y = f(xl, wl, bl);
  y.backward(dy.to(y.scalar_type()));
  return {y.detach(), xl.grad(), wl.grad(), bl.grad()};
}

inline double max_abs_diff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.to(torch::kFloat64) - b.to(torch::kFloat64)).abs().max().item<double>();
}

}  // namespace exfusion::testing
