// Run-directory files and self-describing checkpoints (see run_files.h).
#include "exfusion/cli/run_files.h"

#include "exfusion/util/atomic_file.h"
#include "exfusion/util/error.h"

namespace exfusion {

void save_training_state(const std::filesystem::path& path, const NamedTensors& state,
                         const RunConfig& config) {
  save_safetensors(
      path, state,
      {{kConfigMetadataKey, to_json(config).dump()}, {"exfusion.kind", "training-state"}});
}

nlohmann::json timm_kwargs(const VisionTransformerOptions& model) {
  return {{"img_size", model.img_size},
          {"patch_size", model.patch_size},
          {"in_chans", model.in_chans},
          {"num_classes", model.num_classes},
          {"embed_dim", model.embed_dim},
          {"depth", model.depth},
          {"num_heads", model.num_heads},
          {"mlp_ratio", model.mlp_ratio},
          {"qkv_bias", true},
          {"class_token", true},
          {"global_pool", "token"}};
}

void save_dense_model(const std::filesystem::path& path, const NamedTensors& tensors,
                      const RunConfig& config) {
  save_safetensors(path, tensors,
                   {{kConfigMetadataKey, to_json(config).dump()},
                    {"exfusion.kind", "dense-model"},
                    {"format", "pt"}});
  const nlohmann::json model_json = {{"architecture", "vit"},
                                     {"weights", path.filename().string()},
                                     {"timm_kwargs", timm_kwargs(config.model)},
                                     {"mean", config.data.mean},
                                     {"std", config.data.std},
                                     {"exfusion", to_json(config)}};
  write_text_atomically(path.parent_path() / kModelConfigFile, model_json.dump(2) + "\n");
}

std::filesystem::path checkpoint_path(const std::filesystem::path& path, bool prefer_state) {
  if (!std::filesystem::is_directory(path)) {
    if (!std::filesystem::exists(path)) throw InputError(path.string() + ": no such file");
    return path;
  }
  auto file = path / (prefer_state ? kStateFile : kModelFile);
  if (!std::filesystem::exists(file)) {
    throw InputError(path.string() + ": no " + file.filename().string() + " in this run directory");
  }
  return file;
}

Checkpoint load_checkpoint(const std::filesystem::path& path, const std::string& config_override) {
  Checkpoint checkpoint;
  checkpoint.file = load_safetensors(path);
  const auto& metadata = checkpoint.file.metadata;
  const auto kind = metadata.find("exfusion.kind");
  checkpoint.is_training_state = kind != metadata.end() && kind->second == "training-state";
  // The checkpoint's own config, with --config laid over it when given: a different
  // architecture then fails against the tensors, and the normalisation is kept.
  nlohmann::json config_json = default_run_config_json();
  std::string source = path.string() + " (metadata " + kConfigMetadataKey + ")";
  const auto entry = metadata.find(kConfigMetadataKey);
  if (entry != metadata.end()) {
    const auto stored = nlohmann::json::parse(entry->second, nullptr, /*allow_exceptions=*/false);
    if (stored.is_discarded()) throw InputError(source + ": not valid JSON");
    merge_config(config_json, stored, source);
  } else if (config_override.empty()) {
    throw InputError(path.string() + ": no '" + std::string(kConfigMetadataKey) +
                     "' metadata; pass --config with the model's config");
  }
  if (!config_override.empty()) {
    merge_config(config_json, read_json_file(config_override), config_override);
    source = config_override;
  }
  checkpoint.config = run_config_from_json(config_json, source);
  return checkpoint;
}

}  // namespace exfusion
