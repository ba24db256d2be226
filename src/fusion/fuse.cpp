// Trained model -> dense tensors (see fuse.h).
#include "exfusion/fusion/fuse.h"

#include <string>
#include <vector>

#include "exfusion/layers/capabilities.h"
#include "exfusion/layers/ffn_kind.h"
#include "exfusion/util/error.h"

namespace exfusion {
namespace {

void collect(const torch::nn::Module& module, const std::string& prefix, NamedTensors& out) {
  if (dynamic_cast<const FeedForwardImpl*>(&module) != nullptr) {
    const auto* dense = dynamic_cast<const HasDenseForm*>(&module);
    if (dense == nullptr) {
      const auto path =
          prefix.empty() ? std::string("the model") : prefix.substr(0, prefix.size() - 1);
      throw InputError(path + " (" + module.name() +
                       ") has no dense equivalent to fuse into: only FFN kinds with a dense form "
                       "(dense, exfusion) can be fused and exported for timm");
    }
    torch::NoGradGuard no_grad;
    for (auto& [name, tensor] : dense->dense_tensors()) {
      out.emplace_back(prefix + name, tensor.detach());
    }
    return;
  }
  for (const auto& item : module.named_parameters(/*recurse=*/false)) {
    out.emplace_back(prefix + item.key(), item.value().detach());
  }
  for (const auto& item : module.named_buffers(/*recurse=*/false)) {
    out.emplace_back(prefix + item.key(), item.value().detach());
  }
  for (const auto& child : module.named_children()) {
    collect(*child.value(), prefix + child.key() + ".", out);
  }
}

}  // namespace

NamedTensors fused_tensors(const torch::nn::Module& trained) {
  NamedTensors out;
  collect(trained, "", out);
  return out;
}

}  // namespace exfusion
