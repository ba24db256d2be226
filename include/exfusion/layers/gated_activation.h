// A gated FFN's hidden units act(gate) ⊙ up (T5's gated GELU, Llama's SwiGLU): float32 on the
// CPU through kernels of our own (train.gated_activation_kernels, counted as a fast path),
// everything else through the ATen composite they are tested against.
#pragma once
#include <torch/types.h>

#include "exfusion/layers/ffn_site.h"

namespace exfusion {

torch::Tensor gated_activation(Activation activation, const torch::Tensor& gate,
                               const torch::Tensor& up);

// activate(activation, gate) * up.
torch::Tensor gated_activation_reference(Activation activation, const torch::Tensor& gate,
                                         const torch::Tensor& up);

}  // namespace exfusion
