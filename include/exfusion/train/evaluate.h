// Test-set evaluation: accuracy and mean cross-entropy of a model in eval mode, optionally
// keeping the logits (to compare a fused model with the trained one, or to export them).
#pragma once
#include <torch/types.h>

#include "exfusion/data/loader.h"
#include "exfusion/models/vit.h"

namespace exfusion {

struct EvalResult {
  double accuracy = 0.0;  // fraction in [0, 1]
  double loss = 0.0;
  int64_t samples = 0;
  torch::Tensor logits;  // [samples, classes] float32 on CPU, in loader order, when kept
};

EvalResult evaluate(VisionTransformer& model, BatchLoader& loader, const torch::Device& device,
                    bool bf16, bool keep_logits);

}  // namespace exfusion
