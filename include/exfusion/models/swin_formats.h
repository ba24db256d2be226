// Swin's formats, registered for model kind "swin" in models/registry.cpp. Export: timm's (our
// names are timm's SwinTransformer's; model.json gives its constructor kwargs). Import: a timm
// SwinTransformer state_dict as a dense start, its architecture from the tensors' shapes (the
// heads from the bias tables' columns, the window from their rows; img_size from --set
// model.img_size, else timm's 224).
#pragma once
#include <string>
#include <vector>

#include "exfusion/models/export_formats.h"
#include "exfusion/models/model_formats.h"

namespace exfusion {

class TimmSwinExport : public ExportFormat {
 public:
  std::vector<DescriptionFile> description_files(const ExportContext& context) const override;
};

class TimmSwinFormat : public ImportFormat {
 public:
  std::string signature() const override {
    return "layers.0.blocks.0.attn.relative_position_bias_table";
  }
  ForeignArchitecture architecture(const SafetensorsFile& file, const std::filesystem::path& path,
                                   const nlohmann::json& model_patch) const override;
  std::vector<std::string> names_in_file(const std::string& ours) const override { return {ours}; }
};

}  // namespace exfusion
