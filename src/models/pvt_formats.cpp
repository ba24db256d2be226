// PVT v1's export (see pvt_formats.h).
#include "exfusion/models/pvt_formats.h"

#include <filesystem>
#include <stdexcept>

#include "exfusion/models/pvt.h"

namespace exfusion {

std::vector<DescriptionFile> PvtAuthorsExport::description_files(
    const ExportContext& context) const {
  const auto* pvt = context.model.as<PvtOptions>();
  if (pvt == nullptr) throw std::logic_error("PVT v1's export given a model of another kind");
  auto description = exfusion_model_description(context);
  description["architecture"] = "pvt_v1";
  // The authors' norms (LayerNorm eps 1e-6 in the blocks, 1e-5 in the embeddings and the
  // reduction) and qkv_bias are their defaults for every preset.
  description["pvt_kwargs"] = {{"img_size", pvt->img_size},     {"patch_size", pvt->patch_size},
                               {"in_chans", pvt->in_chans},     {"num_classes", pvt->num_classes},
                               {"embed_dims", pvt->embed_dims}, {"num_heads", pvt->num_heads},
                               {"mlp_ratios", pvt->mlp_ratios}, {"qkv_bias", true},
                               {"depths", pvt->depths},         {"sr_ratios", pvt->sr_ratios}};
  const auto name = std::filesystem::path(context.weights_file).replace_extension(".json");
  return {{name.string(), description.dump(2) + "\n"}};
}

}  // namespace exfusion
