// Truncated normal init as timm draws it (inverse CDF of a uniform draw), which LibTorch's
// C++ API lacks; ViT initialises every linear layer and the position embedding with it.
#pragma once
#include <torch/types.h>

namespace exfusion {

// Fills `tensor` in place from N(0, std²) truncated to [-2·std, 2·std].
void trunc_normal_(const torch::Tensor& tensor, double std);
// trunc_normal_ where `truncated`, else N(0, std²) as torch's normal_ draws it.
void init_normal_(const torch::Tensor& tensor, double std, bool truncated);

}  // namespace exfusion
