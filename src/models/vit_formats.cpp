// The ViT's outside formats (see vit_formats.h): where each reads the architecture from, and
// which of its tensors makes each of ours.
#include "exfusion/models/vit_formats.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <map>
#include <optional>
#include <stdexcept>

#include "exfusion/io/run_names.h"
#include "exfusion/models/hugging_face_config.h"
#include "exfusion/models/vit.h"
#include "exfusion/util/error.h"
#include "exfusion/util/json_input.h"
#include "exfusion/util/shape_text.h"

namespace exfusion {
namespace fs = std::filesystem;
namespace {

constexpr int64_t kMaxPatchSize = 4096;  // model.patch_size's and model.img_size's bound

// Hugging Face's names for one of our tensors: query, key and value (in that order, each a
// third of the rows) for attn.qkv, one name for every other.
std::vector<std::string> hf_names(const std::string& ours) {
  if (ours == "cls_token") return {"vit.embeddings.cls_token"};
  if (ours == "pos_embed") return {"vit.embeddings.position_embeddings"};
  const auto dot = ours.rfind('.');
  const auto module = ours.substr(0, dot), param = ours.substr(dot);  // param: ".weight"
  const std::string blocks = "blocks.";
  if (module.rfind(blocks, 0) == 0) {
    const auto index_end = module.find('.', blocks.size());
    const auto layer =
        "vit.encoder.layer." + module.substr(blocks.size(), index_end - blocks.size());
    const auto inner = module.substr(index_end + 1);
    if (inner == "attn.qkv") {
      return {layer + ".attention.attention.query" + param,
              layer + ".attention.attention.key" + param,
              layer + ".attention.attention.value" + param};
    }
    static const std::map<std::string, std::string> in_block = {
        {"norm1", "layernorm_before"},
        {"attn.proj", "attention.output.dense"},
        {"norm2", "layernorm_after"},
        {"mlp.fc1", "intermediate.dense"},
        {"mlp.fc2", "output.dense"}};
    return {layer + "." + in_block.at(inner) + param};
  }
  static const std::map<std::string, std::string> top = {
      {"patch_embed.proj", "vit.embeddings.patch_embeddings.projection"},
      {"norm", "vit.layernorm"},
      {"head", "classifier"}};
  return {top.at(module) + param};
}

// H / D as the mlp_ratio whose hidden width (D · ratio, truncated) is H again.
double mlp_ratio_of(int64_t hidden, int64_t dim) {
  if (dim <= 0 || hidden <= 0) return 0.0;  // refused by model.mlp_ratio's check
  auto ratio = static_cast<double>(hidden) / static_cast<double>(dim);
  if (static_cast<int64_t>(static_cast<double>(dim) * ratio) < hidden) {
    ratio = std::nextafter(ratio, HUGE_VAL);
  }
  return ratio;
}

const torch::Tensor& required_tensor(const SafetensorsFile& file, const fs::path& path,
                                     const std::string& name, int64_t dims) {
  const auto found = file.tensors.find(name);
  if (found == file.tensors.end()) {
    throw InputError(path.string() + ": no tensor " + name + ", which a timm ViT has");
  }
  if (found->second.dim() != dims) {
    throw InputError(path.string() + ": " + name + ": shape " + shape_text(found->second.sizes()) +
                     " in file, expected " + std::to_string(dims) + " dimensions");
  }
  return found->second;
}

// timm's heads for its standard widths (ViT-Ti/S/B/L).
std::optional<int64_t> timm_heads(int64_t width) {
  static const std::map<int64_t, int64_t> heads = {{192, 3}, {384, 6}, {768, 12}, {1024, 16}};
  const auto found = heads.find(width);
  if (found == heads.end()) return std::nullopt;
  return found->second;
}

// The model section a timm state_dict's shapes describe; num_heads from `patch`, else timm's.
nlohmann::json timm_architecture(const SafetensorsFile& file, const fs::path& path,
                                 const nlohmann::json& patch) {
  const auto& proj = required_tensor(file, path, "patch_embed.proj.weight", 4);
  const auto dim = proj.size(0), patch_size = proj.size(2);
  if (proj.size(3) != patch_size || patch_size < 1 || patch_size > kMaxPatchSize) {
    throw InputError(path.string() + ": patch_embed.proj.weight: shape " +
                     shape_text(proj.sizes()) + " in file, expected square patches of 1 to " +
                     std::to_string(kMaxPatchSize) + " pixels");
  }
  const auto& pos = required_tensor(file, path, "pos_embed", 3);
  const auto patches = pos.size(1) - 1;  // the class token's position first
  const auto grid = static_cast<int64_t>(std::llround(std::sqrt(static_cast<double>(patches))));
  if (patches < 1 || patches > kMaxPatchSize * kMaxPatchSize || grid * grid != patches) {
    throw InputError(path.string() + ": pos_embed: shape " + shape_text(pos.sizes()) +
                     " in file, expected 1 class token + a square grid of patch positions");
  }
  int64_t depth = 0;
  const std::string blocks = "blocks.";
  for (const auto& [name, tensor] : file.tensors) {
    if (name.rfind(blocks, 0) != 0) continue;
    const auto index = name.substr(blocks.size(), name.find('.', blocks.size()) - blocks.size());
    if (index.empty() || index.size() > 6 || index.find_first_not_of("0123456789") != index.npos) {
      throw InputError(path.string() + ": " + name + ": expected blocks.<index>.<name>");
    }
    depth = std::max<int64_t>(depth, std::stoll(index) + 1);
  }
  const auto hidden = required_tensor(file, path, "blocks.0.mlp.fc1.weight", 2).size(0);
  const auto classes = required_tensor(file, path, "head.weight", 2).size(0);
  // When `patch` gives num_heads it sets it (and reports a wrong value): 1 divides any width.
  const bool heads_given = patch.is_object() && patch.contains("num_heads");
  const auto standard = timm_heads(dim);
  if (!heads_given && !standard) {
    throw InputError(path.string() + ": a timm ViT of width " + std::to_string(dim) +
                     ": its number of attention heads is in no tensor's shape and timm has no "
                     "standard for this width; pass --set model.num_heads=N");
  }
  const int64_t heads = heads_given ? 1 : *standard;
  return {{"img_size", grid * patch_size},
          {"in_chans", proj.size(1)},
          {"patch_size", patch_size},
          {"embed_dim", dim},
          {"depth", depth},
          {"num_heads", heads},
          {"mlp_ratio", mlp_ratio_of(hidden, dim)},
          {"num_classes", classes}};
}

// The model section a Hugging Face ViTConfig (config.json beside the file) describes; a key it
// leaves out has ViTConfig's default.
nlohmann::json hf_architecture(const fs::path& config_path, const fs::path& model) {
  const HuggingFaceConfig config(config_path, model, "a ViTConfig");
  const auto integer = [&](const char* key, int64_t fallback) {
    return config.integer(key, fallback);
  };
  const auto& at = config.location();
  config.expect("model_type", "vit", "a ViTForImageClassification");
  config.expect("hidden_act", "gelu", "our ViT's exact GELU");
  config.expect("qkv_bias", true, "our ViT's qkv has a bias");
  const double eps = config.number("layer_norm_eps", 1e-12);
  int64_t labels = integer("num_labels", 2);
  if (config.contains("id2label")) {
    const auto& id2label = config.json().at("id2label");
    if (!id2label.is_object()) config::fail(at, "id2label", id2label, "an object");
    labels = static_cast<int64_t>(id2label.size());
  }
  const auto dim = integer("hidden_size", 768);
  return {{"img_size", integer("image_size", 224)},
          {"in_chans", integer("num_channels", 3)},
          {"patch_size", integer("patch_size", 16)},
          {"embed_dim", dim},
          {"depth", integer("num_hidden_layers", 12)},
          {"num_heads", integer("num_attention_heads", 12)},
          {"mlp_ratio", mlp_ratio_of(integer("intermediate_size", 3072), dim)},
          {"num_classes", labels},
          {"norm_eps", eps}};
}

}  // namespace

ForeignArchitecture TimmVitFormat::architecture(const SafetensorsFile& file, const fs::path& path,
                                                const nlohmann::json& model_patch) const {
  auto model = timm_architecture(file, path, model_patch);
  model["kind"] = "vit";
  return {model, path.string() + " (the shapes of its tensors)", "its tensors' shapes describe"};
}

std::vector<std::string> TimmVitFormat::names_in_file(const std::string& ours) const {
  return {ours};  // our ViT's names are timm's
}

ForeignArchitecture HuggingFaceVitFormat::architecture(
    const SafetensorsFile& /*file*/, const fs::path& path,
    const nlohmann::json& /*model_patch*/) const {
  const auto config_path = path.parent_path() / kConfigFile;
  auto model = hf_architecture(config_path, path);
  model["kind"] = "vit";
  return {model, config_path.string(), "its config " + config_path.string() + " describes"};
}

std::vector<std::string> HuggingFaceVitFormat::names_in_file(const std::string& ours) const {
  return hf_names(ours);
}

std::vector<DescriptionFile> TimmVitExport::description_files(const ExportContext& context) const {
  const auto* vit = context.model.as<VisionTransformerOptions>();
  if (vit == nullptr) throw std::logic_error("timm's ViT export given a model of another kind");
  auto description = exfusion_model_description(context);
  description["architecture"] = "vit";
  description["timm_kwargs"] = {{"img_size", vit->img_size},
                                {"patch_size", vit->patch_size},
                                {"in_chans", vit->in_chans},
                                {"num_classes", vit->num_classes},
                                {"embed_dim", vit->embed_dim},
                                {"depth", vit->depth},
                                {"num_heads", vit->num_heads},
                                {"mlp_ratio", vit->mlp_ratio},
                                {"qkv_bias", true},
                                {"class_token", true},
                                {"global_pool", "token"}};
  description["norm_eps"] = vit->norm_eps;
  const auto name = std::filesystem::path(context.weights_file).replace_extension(".json");
  return {{name.string(), description.dump(2) + "\n"}};
}

}  // namespace exfusion
