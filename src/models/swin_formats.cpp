// Swin's outside formats (see swin_formats.h).
#include "exfusion/models/swin_formats.h"

#include <cmath>
#include <stdexcept>

#include "exfusion/models/swin.h"
#include "exfusion/util/error.h"
#include "exfusion/util/shape_text.h"

namespace exfusion {
namespace fs = std::filesystem;
namespace {

const torch::Tensor& swin_tensor(const SafetensorsFile& file, const fs::path& path,
                                 const std::string& name, int64_t dims) {
  const auto found = file.tensors.find(name);
  if (found == file.tensors.end()) {
    throw InputError(path.string() + ": no tensor " + name + ", which a timm Swin has");
  }
  if (found->second.dim() != dims) {
    throw InputError(path.string() + ": " + name + ": shape " + shape_text(found->second.sizes()) +
                     " in file, expected " + std::to_string(dims) + " dimensions");
  }
  return found->second;
}

}  // namespace

std::vector<DescriptionFile> TimmSwinExport::description_files(const ExportContext& context) const {
  const auto* swin = context.model.as<SwinOptions>();
  if (swin == nullptr) throw std::logic_error("timm's Swin export given a model of another kind");
  auto description = exfusion_model_description(context);
  description["architecture"] = "swin";
  description["timm_kwargs"] = {{"img_size", swin->img_size},   {"patch_size", swin->patch_size},
                                {"in_chans", swin->in_chans},   {"num_classes", swin->num_classes},
                                {"embed_dim", swin->embed_dim}, {"depths", swin->depths},
                                {"num_heads", swin->num_heads}, {"window_size", swin->window_size},
                                {"mlp_ratio", swin->mlp_ratio}};
  description["norm_eps"] = swin->norm_eps;
  const auto name = fs::path(context.weights_file).replace_extension(".json");
  return {{name.string(), description.dump(2) + "\n"}};
}

ForeignArchitecture TimmSwinFormat::architecture(const SafetensorsFile& file, const fs::path& path,
                                                 const nlohmann::json& model_patch) const {
  const auto& proj = swin_tensor(file, path, "patch_embed.proj.weight", 4);
  std::vector<int64_t> depths, heads;
  int64_t window = 0;
  for (int64_t i = 0;; ++i) {
    const auto stage = "layers." + std::to_string(i) + ".blocks.";
    int64_t blocks = 0;
    while (file.tensors.count(stage + std::to_string(blocks) + ".norm1.weight") != 0) ++blocks;
    if (blocks == 0) break;
    depths.push_back(blocks);
    const auto& table = swin_tensor(file, path, stage + "0.attn.relative_position_bias_table", 2);
    heads.push_back(table.size(1));
    // (2w − 1)² rows; a stage smaller than the window has a smaller table, stage 0 the window's.
    if (i == 0) {
      const auto side = static_cast<int64_t>(std::llround(std::sqrt(table.size(0))));
      if (side * side != table.size(0) || side % 2 == 0) {
        throw InputError(path.string() + ": " + stage +
                         "0.attn.relative_position_bias_table: shape " + shape_text(table.sizes()) +
                         " in file, expected (2w − 1)² rows");
      }
      window = (side + 1) / 2;
    }
  }
  if (depths.empty()) {
    throw InputError(path.string() + ": no layers.0.blocks.0.norm1.weight, which a timm Swin has");
  }
  const auto dim = proj.size(0);
  const auto hidden = swin_tensor(file, path, "layers.0.blocks.0.mlp.fc1.weight", 2).size(0);
  const auto classes = swin_tensor(file, path, "head.fc.weight", 2).size(0);
  const bool size_given = model_patch.is_object() && model_patch.contains("img_size");
  nlohmann::json model = {
      {"kind", "swin"},
      {"img_size", size_given ? model_patch.at("img_size") : nlohmann::json(224)},
      {"in_chans", proj.size(1)},
      {"patch_size", proj.size(2)},
      {"embed_dim", dim},
      {"depths", depths},
      {"num_heads", heads},
      {"window_size", window},
      {"mlp_ratio", static_cast<double>(hidden) / static_cast<double>(dim)},
      {"num_classes", classes}};
  return {model, path.string() + " (the shapes of its tensors)", "its tensors' shapes describe"};
}

}  // namespace exfusion
