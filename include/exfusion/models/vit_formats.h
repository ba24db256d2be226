// The ViT's formats, registered for model kind "vit" in models/registry.cpp. Export: timm's
// (models/export_formats.h): our names are timm's, and model.json gives timm's constructor kwargs.
// Import (models/model_formats.h): a timm VisionTransformer state_dict (our names are timm's; the
// architecture from the tensors' shapes, num_heads from --set model.num_heads or timm's for
// the standard widths) and a Hugging Face ViTForImageClassification save_pretrained directory
// (the architecture from its config.json; query, key and value stacked into attn.qkv).
#pragma once
#include <string>
#include <vector>

#include "exfusion/models/export_formats.h"
#include "exfusion/models/model_formats.h"

namespace exfusion {

class TimmVitExport : public ExportFormat {
 public:
  std::vector<DescriptionFile> description_files(const ExportContext& context) const override;
};

class TimmVitFormat : public ImportFormat {
 public:
  // Not patch_embed.proj.weight, which timm's Swin and PVT v2 have too.
  std::string signature() const override { return "pos_embed"; }
  ForeignArchitecture architecture(const SafetensorsFile& file, const std::filesystem::path& path,
                                   const nlohmann::json& model_patch) const override;
  std::vector<std::string> names_in_file(const std::string& ours) const override;
};

class HuggingFaceVitFormat : public ImportFormat {
 public:
  std::string signature() const override {
    return "vit.embeddings.patch_embeddings.projection.weight";
  }
  ForeignArchitecture architecture(const SafetensorsFile& file, const std::filesystem::path& path,
                                   const nlohmann::json& model_patch) const override;
  std::vector<std::string> names_in_file(const std::string& ours) const override;
};

}  // namespace exfusion
