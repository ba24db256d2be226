// PVT v2's outside formats (see pvt_v2_formats.h).
#include "exfusion/models/pvt_v2_formats.h"

#include <stdexcept>

#include "exfusion/models/pvt_v2.h"
#include "exfusion/util/error.h"
#include "exfusion/util/shape_text.h"

namespace exfusion {
namespace fs = std::filesystem;
namespace {

const torch::Tensor& pvt_v2_tensor(const SafetensorsFile& file, const fs::path& path,
                                   const std::string& name, int64_t dims) {
  const auto found = file.tensors.find(name);
  if (found == file.tensors.end()) {
    throw InputError(path.string() + ": no tensor " + name + ", which a timm PVT v2 has");
  }
  if (found->second.dim() != dims) {
    throw InputError(path.string() + ": " + name + ": shape " + shape_text(found->second.sizes()) +
                     " in file, expected " + std::to_string(dims) + " dimensions");
  }
  return found->second;
}

}  // namespace

std::vector<DescriptionFile> TimmPvtV2Export::description_files(
    const ExportContext& context) const {
  const auto* pvt = context.model.as<PvtV2Options>();
  if (pvt == nullptr) throw std::logic_error("timm's PVT v2 export given a model of another kind");
  auto description = exfusion_model_description(context);
  description["architecture"] = "pvt_v2";
  description["timm_kwargs"] = {{"in_chans", pvt->in_chans},
                                {"num_classes", pvt->num_classes},
                                {"depths", pvt->depths},
                                {"embed_dims", pvt->embed_dims},
                                {"num_heads", pvt->num_heads},
                                {"sr_ratios", pvt->sr_ratios},
                                {"mlp_ratios", pvt->mlp_ratios},
                                {"qkv_bias", true},
                                {"linear", false}};
  description["img_size"] = pvt->img_size;
  const auto name = fs::path(context.weights_file).replace_extension(".json");
  return {{name.string(), description.dump(2) + "\n"}};
}

ForeignArchitecture TimmPvtV2Format::architecture(const SafetensorsFile& file, const fs::path& path,
                                                  const nlohmann::json& model_patch) const {
  const auto& stem = pvt_v2_tensor(file, path, "patch_embed.proj.weight", 4);
  std::vector<int64_t> dims, depths, sr_ratios;
  std::vector<double> mlp_ratios;
  for (int64_t i = 0;; ++i) {
    const auto stage = "stages." + std::to_string(i) + ".blocks.";
    int64_t blocks = 0;
    while (file.tensors.count(stage + std::to_string(blocks) + ".norm1.weight") != 0) ++blocks;
    if (blocks == 0) break;
    depths.push_back(blocks);
    const auto dim = pvt_v2_tensor(file, path, stage + "0.norm1.weight", 1).size(0);
    dims.push_back(dim);
    const auto sr = file.tensors.find(stage + "0.attn.sr.weight");
    sr_ratios.push_back(sr == file.tensors.end() ? 1 : sr->second.size(-1));
    const auto hidden = pvt_v2_tensor(file, path, stage + "0.mlp.fc1.weight", 2).size(0);
    mlp_ratios.push_back(static_cast<double>(hidden) / static_cast<double>(dim));
  }
  if (depths.empty()) {
    throw InputError(path.string() +
                     ": no stages.0.blocks.0.norm1.weight, which a timm PVT v2 has");
  }
  const bool heads_given = model_patch.is_object() && model_patch.contains("num_heads");
  if (!heads_given && depths.size() != 4) {
    throw InputError(path.string() + ": a timm PVT v2 of " + std::to_string(depths.size()) +
                     " stages: its attention heads are in no tensor's shape and timm's standard "
                     "is for 4 stages; pass --set model.num_heads=[...]");
  }
  const auto classes = pvt_v2_tensor(file, path, "head.weight", 2).size(0);
  const bool size_given = model_patch.is_object() && model_patch.contains("img_size");
  nlohmann::json model = {
      {"kind", "pvt_v2"},
      {"img_size", size_given ? model_patch.at("img_size") : nlohmann::json(224)},
      {"in_chans", stem.size(1)},
      {"embed_dims", dims},
      {"num_heads", heads_given ? model_patch.at("num_heads")
                                : nlohmann::json(std::vector<int64_t>{1, 2, 5, 8})},
      {"mlp_ratios", mlp_ratios},
      {"depths", depths},
      {"sr_ratios", sr_ratios},
      {"num_classes", classes}};
  return {model, path.string() + " (the shapes of its tensors)", "its tensors' shapes describe"};
}

}  // namespace exfusion
