// A copy of a module's tensors by checkpoint name, taken before a test changes the module
// (upcycling from it, fusing it), so the test can compare against where it started.
#pragma once
#include <torch/nn/module.h>

#include "exfusion/io/module_tensors.h"
#include "exfusion/upcycling/upcycle.h"

namespace exfusion::testing {

inline DenseTensors tensors_of(const torch::nn::Module& model) {
  DenseTensors tensors;
  for (const auto& [name, tensor] : module_tensors(model)) tensors.emplace(name, tensor.clone());
  return tensors;
}

}  // namespace exfusion::testing
