// A tensor shape as error messages print it, "[2, 3]" (as LibTorch prints an IntArrayRef), from
// any range of integers. Torch-free, so the fuzzed readers' parsing half shares it.
#pragma once
#include <string>

namespace exfusion {

template <class Dims>
std::string shape_text(const Dims& dims) {
  std::string text = "[";
  bool first = true;
  for (const auto dim : dims) {
    text += (first ? "" : ", ") + std::to_string(dim);
    first = false;
  }
  return text + "]";
}

}  // namespace exfusion
