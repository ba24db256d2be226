// After training: every multi-expert FFN collapses into one dense FFN (W = Σ m_i E_i with the
// final m). Works on any module tree: FFNs give their dense form (layers/capabilities.h), every
// other tensor is kept, so the result is the dense architecture's checkpoint, with the same
// names, counts and FLOPs, and the same eval outputs as the trained model.
#pragma once
#include <torch/nn/module.h>

#include "exfusion/io/safetensors.h"

namespace exfusion {

// The dense model's parameters and buffers under their names. Throws InputError naming the FFN
// (e.g. "blocks.0.mlp") that has no dense form, as a mixture of experts has not.
NamedTensors fused_tensors(const torch::nn::Module& trained);

}  // namespace exfusion
