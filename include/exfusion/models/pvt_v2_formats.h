// PVT v2's formats, registered for model kind "pvt_v2" in models/registry.cpp. Export: timm's
// (our names are timm's PyramidVisionTransformerV2's; model.json gives its constructor kwargs).
// Import: a timm state_dict as a dense start, its architecture from the tensors' shapes (the
// reductions from attn.sr's kernels, the widths, depths and FFN ratios from the blocks); the
// heads are in no shape: --set model.num_heads, else timm's (1, 2, 5, 8) for four stages.
#pragma once
#include <string>
#include <vector>

#include "exfusion/models/export_formats.h"
#include "exfusion/models/model_formats.h"

namespace exfusion {

class TimmPvtV2Export : public ExportFormat {
 public:
  std::vector<DescriptionFile> description_files(const ExportContext& context) const override;
};

class TimmPvtV2Format : public ImportFormat {
 public:
  std::string signature() const override { return "stages.0.blocks.0.attn.q.weight"; }
  ForeignArchitecture architecture(const SafetensorsFile& file, const std::filesystem::path& path,
                                   const nlohmann::json& model_patch) const override;
  std::vector<std::string> names_in_file(const std::string& ours) const override { return {ours}; }
};

}  // namespace exfusion
