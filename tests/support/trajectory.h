// Two runs of the same short training (kernels on and off, graphed and eager) and the
// comparison of their parameters. The key third of each attention block's qkv bias is left out:
// softmax ignores a constant added to all of a query's scores, so that bias's true gradient is zero
// and what autograd computes is rounding noise, which AdamW normalises into steps of up to lr whose
// sign follows the summation order.
#pragma once
#include <gtest/gtest.h>
#include <torch/types.h>

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "exfusion/models/vit.h"
#include "exfusion/train/run_config.h"
#include "exfusion/train/trainer.h"
#include "tiny_models.h"

namespace exfusion::testing {

using NamedParams = std::vector<std::pair<std::string, torch::Tensor>>;

inline NamedParams trained_params(const ModelPtr& model) {
  NamedParams params;
  for (const auto& item : model->named_parameters()) {
    params.emplace_back(item.key(), item.value().detach().cpu());
  }
  return params;
}

// The run the kernel tests repeat with one switch flipped: a tiny ExFusion-mb ViT (N = 4) on
// `device`, float32, batches of 6.
inline RunConfig tiny_training_config(const std::string& device) {
  RunConfig config = default_run_config();
  use_vit(config, tiny_vit("exfusion", FusionVariant::kMemoryBank, 4));
  config.train.batch_size = 6;
  config.train.device = device;
  config.train.precision = "fp32";
  return config;
}

// `steps` steps of random batches at a fixed learning rate, from fixed seeds.
inline NamedParams train_tiny_vit(const RunConfig& config, int steps) {
  torch::manual_seed(7);
  auto model = build_model(config.model, config.ffn);
  Trainer trainer(config.train, model, make_task(config), torch::Device(config.train.device));
  trainer.set_lr(1e-2);
  torch::manual_seed(8);
  const auto m = vit_of(config);
  const int64_t batch = config.train.batch_size;
  for (int i = 0; i < steps; ++i) {
    trainer.step({torch::randn({batch, m.in_chans, m.img_size, m.img_size}),
                  torch::randint(0, m.num_classes, {batch})});
  }
  return trained_params(model);
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

// What two float32 runs of train_tiny_vit may differ by when only their summation order
// differs. Clipping shrinks some gradient elements below AdamW's eps (1e-8), where the update
// is about lr · g / eps: a rounding difference of 1e-11 in g then moves the parameter by 1e-5
// (simulated on float32 against float64: up to 7.8e-5 over 60 seeds; a GPU's summation
// orders and TF32 convolutions may add to that). A wrong clip scale, coefficient gradient or
// update changes many updates by a good part of lr (1e-2), far above this.
constexpr double kTrajectoryTolerance = 2e-4;

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
