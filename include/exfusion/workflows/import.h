// `exfusion import` as a library call: a dense model from outside (ours, or a format its model
// kind registers: models/model_formats.h, e.g. timm's or Hugging Face's ViT) written as our
// dense checkpoint (save_dense_model), which eval, info and training from it read.
#pragma once
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace exfusion {

struct ImportRun {
  std::filesystem::path source;  // a run directory, a .safetensors file, a save_pretrained dir
  std::filesystem::path out;     // the dense checkpoint written, its description beside it
  std::string from = "auto";     // auto, exfusion or a registered format (timm, huggingface)
  // key.path=value: model.* read with the tensors (num_heads for a timm file), any other key
  // (data.mean, data.std) laid over the written checkpoint's config.
  std::vector<std::string> assignments;
  bool force = false;
  std::string format;  // the export format written ("": the model kind's first)
};
nlohmann::json import_checkpoint(const ImportRun& run);

}  // namespace exfusion
