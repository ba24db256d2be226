// `exfusion export` as a library call: a trained top-k mixture of experts written in its model
// kind's sparse format (models/mixture_export.h: a Llama's MoE as a MixtralForCausalLM
// directory), from the training state as it is: a mixture has no dense form to fuse into.
#pragma once
#include <filesystem>
#include <nlohmann/json.hpp>

namespace exfusion {

struct ExportMixtureRun {
  std::filesystem::path path;  // a run directory or its state.safetensors
  std::filesystem::path out;   // default: the format's directory beside the state (hf/)
  bool force = false;
};
nlohmann::json export_mixture(const ExportMixtureRun& run);

}  // namespace exfusion
