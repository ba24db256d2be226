// Module tensors <-> safetensors entries (see module_tensors.h).
#include "exfusion/io/module_tensors.h"

namespace exfusion {

NamedTensors module_tensors(const torch::nn::Module& module, const std::string& prefix) {
  NamedTensors tensors;
  for (const auto& item : module.named_parameters()) {
    tensors.emplace_back(prefix + item.key(), item.value().detach());
  }
  for (const auto& item : module.named_buffers()) {
    tensors.emplace_back(prefix + item.key(), item.value().detach());
  }
  return tensors;
}

void load_module_tensors(torch::nn::Module& module, const SafetensorsFile& file,
                         const std::filesystem::path& path, const std::string& prefix) {
  const auto expected = module_tensors(module, prefix);
  SafetensorsFile relevant;
  for (const auto& [name, tensor] : file.tensors) {
    if (name.rfind(prefix, 0) == 0) relevant.tensors.emplace(name, tensor);
  }
  validate_against(relevant, expected, path);
  torch::NoGradGuard no_grad;
  for (const auto& [name, tensor] : expected) {
    auto target = tensor;  // shares storage with the module's tensor
    target.copy_(relevant.tensors.at(name));
  }
}

}  // namespace exfusion
