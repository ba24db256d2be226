// T5's Hugging Face formats, registered for model kind "t5" in models/registry.cpp. Export: a
// directory T5ForConditionalGeneration.from_pretrained reads (config.json as T5Config,
// generation_config.json, the run's SentencePiece model as spiece.model), beside weights whose
// names are already Hugging Face's. Import: such a directory (a model.safetensors with its
// config.json), the architecture from the config, the tied embedding copies ignored, a file
// without lm_head (transformers 5 ties it to shared) read with shared as lm_head. A T5 whose
// decoder output is scaled before lm_head (the original T5) is refused: ours is v1.1's.
#pragma once
#include <string>
#include <vector>

#include "exfusion/models/export_formats.h"
#include "exfusion/models/model_formats.h"

namespace exfusion {

class HuggingFaceT5Export : public ExportFormat {
 public:
  // Its own directory: Hugging Face's config.json would clash with a run's.
  std::string directory() const override { return "hf"; }
  std::vector<DescriptionFile> description_files(const ExportContext& context) const override;
};

class HuggingFaceT5Format : public ImportFormat {
 public:
  std::string signature() const override {
    return "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight";
  }
  ForeignArchitecture architecture(const SafetensorsFile& file, const std::filesystem::path& path,
                                   const nlohmann::json& model_patch) const override;
  std::vector<std::string> names_in_file(const std::string& ours) const override { return {ours}; }
  // The copies of `shared` that transformers' older versions saved under each stack.
  bool ignored(const std::string& name) const override;
  // transformers 5 ties lm_head to shared and saves only `shared`.
  std::string tied_to(const std::string& name) const override {
    return name == "lm_head.weight" ? "shared.weight" : "";
  }
};

}  // namespace exfusion
