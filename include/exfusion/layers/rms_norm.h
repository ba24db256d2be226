// Root-mean-square norm without mean subtraction or bias (T5's T5LayerNorm, Llama's
// LlamaRMSNorm): y = weight · x / sqrt(mean(x²) + eps), the statistic in float32 whatever the
// input's dtype, as both Hugging Face models compute it. Float32 on the CPU goes through kernels
// of our own (train.rms_norm_kernels, counted as a fast path).
#pragma once
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include "exfusion/layers/capabilities.h"

namespace exfusion {

class RMSNormImpl : public torch::nn::Module, public ExemptFromWeightDecay {
 public:
  RMSNormImpl(int64_t dim, double eps);
  torch::Tensor forward(const torch::Tensor& x);
  std::vector<std::string> exempt_from_weight_decay() const override { return {"weight"}; }

  double eps;
  torch::Tensor weight;  // ones
};
TORCH_MODULE(RMSNorm);

// The ATen composite every other input takes, and the kernels are tested against.
torch::Tensor rms_norm_reference(const torch::Tensor& x, const torch::Tensor& weight, double eps);

}  // namespace exfusion
