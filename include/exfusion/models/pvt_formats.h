// PVT v1's export, registered for model kind "pvt_v1" in models/registry.cpp: the PVT authors'
// names (whai362/PVT, classification/pvt.py; timm has no PVT v1), with a model.json that gives
// their PyramidVisionTransformer's constructor kwargs.
#pragma once
#include <vector>

#include "exfusion/models/export_formats.h"

namespace exfusion {

class PvtAuthorsExport : public ExportFormat {
 public:
  std::vector<DescriptionFile> description_files(const ExportContext& context) const override;
};

}  // namespace exfusion
