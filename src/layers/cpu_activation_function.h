// The CPU kernels' name for an FFN's activation (ffn_site.h's Activation): every one of them has
// a kernel form, so the plain and gated activations never fall back for the function.
#pragma once
#include "activation_cpu_kernels.h"
#include "exfusion/layers/ffn_site.h"

namespace exfusion {

inline cpu::ActivationFunction cpu_activation_function(Activation activation) {
  switch (activation) {
    case Activation::kGelu:
      return cpu::ActivationFunction::kGelu;
    case Activation::kGeluTanh:
      return cpu::ActivationFunction::kGeluTanh;
    case Activation::kSilu:
      return cpu::ActivationFunction::kSilu;
    case Activation::kRelu:
      break;
  }
  return cpu::ActivationFunction::kRelu;
}

}  // namespace exfusion
