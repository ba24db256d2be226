// A module's parameters and buffers as named tensors (the names timm uses), and loading
// them back with a clear error when a file holds another architecture.
#pragma once
#include <torch/nn/module.h>

#include <filesystem>

#include "exfusion/io/safetensors.h"

namespace exfusion {

NamedTensors module_tensors(const torch::nn::Module& module, const std::string& prefix = "");

// Copies every tensor of `module` from `file` (names under `prefix`); throws InputError
// naming `path` and the mismatching tensors if the file is of another architecture.
void load_module_tensors(torch::nn::Module& module, const SafetensorsFile& file,
                         const std::filesystem::path& path, const std::string& prefix = "");

}  // namespace exfusion
