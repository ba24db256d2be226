// A plain FFN's hidden units act(x) (timm's GELU in ViT, Swin and PVT; T5 v1.0's ReLU): float32
// on the CPU through kernels of our own that leave act'(x) for the backward
// (train.activation_kernels, counted as a fast path), everything else through ffn_site.h's
// activate, the ATen reference they are tested against.
#pragma once
#include <torch/types.h>

#include "exfusion/layers/ffn_site.h"

namespace exfusion {

torch::Tensor hidden_units_activation(Activation activation, const torch::Tensor& x);

}  // namespace exfusion
