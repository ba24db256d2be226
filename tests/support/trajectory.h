// Comparing the parameters of two runs of the same training (kernels on and off, graphed and
// eager). The key third of each attention block's qkv bias is left out: softmax ignores a
// constant added to all of a query's scores, so that bias's true gradient is zero and what
// autograd computes is rounding noise, which AdamW normalises into steps of up to lr whose
// sign follows the summation order.
#pragma once
#include <gtest/gtest.h>
#include <torch/types.h>

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "exfusion/models/vit.h"

namespace exfusion::testing {

using NamedParams = std::vector<std::pair<std::string, torch::Tensor>>;

inline NamedParams trained_params(const VisionTransformer& model) {
  NamedParams params;
  for (const auto& item : model->named_parameters()) {
    params.emplace_back(item.key(), item.value().detach().cpu());
  }
  return params;
}

// `param` without the part whose gradient is rounding noise (see above).
inline torch::Tensor comparable_part(const std::string& name, const torch::Tensor& param) {
  const std::string key_bias = "attn.qkv.bias";
  if (name.size() < key_bias.size() ||
      name.compare(name.size() - key_bias.size(), key_bias.size(), key_bias) != 0) {
    return param;
  }
  const int64_t dim = param.size(0) / 3;
  return torch::cat({param.narrow(0, 0, dim), param.narrow(0, 2 * dim, dim)});
}

inline double max_param_diff(const NamedParams& a, const NamedParams& b) {
  EXPECT_EQ(a.size(), b.size());
  double max_diff = 0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) {
    EXPECT_EQ(a[i].first, b[i].first);
    const auto diff = comparable_part(a[i].first, a[i].second.to(torch::kFloat64)) -
                      comparable_part(b[i].first, b[i].second.to(torch::kFloat64));
    max_diff = std::max(max_diff, diff.abs().max().item<double>());
  }
  return max_diff;
}

}  // namespace exfusion::testing
