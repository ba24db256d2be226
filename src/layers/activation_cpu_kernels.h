// Entry points of the CPU activation kernels (activation_cpu_kernels.cpp): a plain FFN's act(x)
// and its derivative act'(x) in one pass, so that the backward is the product grad ⊙ act'(x),
// where ATen's gelu_backward evaluates erf and exp a second time (about three times the cost of
// its forward on the CPU). The reference they are tested against is ffn_site.h's activate.
#pragma once
#include <cstdint>

namespace exfusion::cpu {

// The activations the CPU kernels cover (cpu_activations.h): exact (erf) GELU, tanh GELU, SiLU
// and ReLU.
enum class ActivationFunction { kGelu, kGeluTanh, kSilu, kRelu };

// out = act(x), derivative = act'(x) over `count` floats.
void activation_forward(ActivationFunction function, int64_t count, const float* x, float* out,
                        float* derivative);

}  // namespace exfusion::cpu
