// Entry points of the CPU gated-activation kernels (gated_activation_cpu_kernels.cpp): a gated
// FFN's act(gate) ⊙ up in one pass, and both gradients in one more, where the ATen composite
// (mlp.cpp's hidden_activation, the reference they are tested against) makes two passes forward
// and four backward over tensors of tokens × hidden values.
#pragma once
#include <cstdint>

#include "activation_cpu_kernels.h"

namespace exfusion::cpu {

// out = act(gate) ⊙ up over `count` floats.
void gated_activation_forward(ActivationFunction function, int64_t count, const float* gate,
                              const float* up, float* out);

// grad_gate = grad_out ⊙ up ⊙ act'(gate), grad_up = grad_out ⊙ act(gate).
void gated_activation_backward(ActivationFunction function, int64_t count, const float* gate,
                               const float* up, const float* grad_out, float* grad_gate,
                               float* grad_up);

}  // namespace exfusion::cpu
