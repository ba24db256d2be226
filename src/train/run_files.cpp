// Run-directory files and self-describing checkpoints (see run_files.h).
#include "exfusion/train/run_files.h"

#include <algorithm>

#include "exfusion/io/module_tensors.h"
#include "exfusion/models/registry.h"
#include "exfusion/train/training_state.h"
#include "exfusion/util/atomic_file.h"
#include "exfusion/util/error.h"

namespace exfusion {

void save_dense_model(const std::filesystem::path& path, const NamedTensors& tensors,
                      const RunConfig& config) {
  save_safetensors(path, tensors,
                   {{kConfigMetadataKey, to_json(config).dump()},
                    {kKindMetadataKey, "dense-model"},
                    {kFormatMetadataKey, std::to_string(TrainingState::kFormatVersion)},
                    {"format", "pt"}});
  auto model_json = config.model.options->export_description();
  model_json["weights"] = path.filename().string();
  model_json["mean"] = config.data.mean;
  model_json["std"] = config.data.std;
  model_json["exfusion"] = to_json(config);
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

nlohmann::json upgrade_stored_config(nlohmann::json config, int64_t format) {
  if (format >= 2 || !config.is_object() || !config.contains("ffn") || !config["ffn"].is_object() ||
      !config["ffn"].contains("kind") || !config["ffn"]["kind"].is_string()) {
    return config;
  }
  auto& ffn = config["ffn"];
  const auto kind = ffn["kind"].get<std::string>();
  if (!ffn_kinds().contains(kind)) return config;  // the reader names the unknown kind
  const auto keys = ffn_kinds().at(kind, {}).defaults->keys();
  auto kept = nlohmann::json::object();
  for (const auto& [key, value] : ffn.items()) {
    if (key == "kind" || key == "layers" ||
        std::find(keys.begin(), keys.end(), key) != keys.end()) {
      kept[key] = value;
    }
  }
  ffn = kept;
  return config;
}

Checkpoint load_checkpoint(const std::filesystem::path& path, const std::string& config_override) {
  Checkpoint checkpoint;
  checkpoint.file = load_safetensors(path);
  const auto& metadata = checkpoint.file.metadata;
  const auto kind = metadata.find(kKindMetadataKey);
  checkpoint.is_training_state = kind != metadata.end() && kind->second == "training-state";
  const auto format = metadata.find(kFormatMetadataKey);
  if (format != metadata.end()) {
    if (format->second != "1" && format->second != "2") {
      throw InputError(path.string() + ": checkpoint format " + format->second +
                       ", this build reads formats 1 and 2");
    }
    checkpoint.format = std::stoll(format->second);
  }
  // The checkpoint's own config, with --config laid over it when given: a different
  // architecture then fails against the tensors, and the normalisation is kept.
  auto config = default_run_config();
  const std::string source = path.string() + " (metadata " + kConfigMetadataKey + ")";
  const auto entry = metadata.find(kConfigMetadataKey);
  if (entry != metadata.end()) {
    const auto stored = nlohmann::json::parse(entry->second, nullptr, /*allow_exceptions=*/false);
    if (stored.is_discarded()) throw InputError(source + ": not valid JSON");
    apply_config(config, upgrade_stored_config(stored, checkpoint.format), source);
  } else if (config_override.empty()) {
    throw InputError(path.string() + ": no '" + std::string(kConfigMetadataKey) +
                     "' metadata; pass --config with the model's config");
  }
  if (!config_override.empty()) config = build_run_config(config, {config_override, {}});
  checkpoint.config = std::move(config);
  return checkpoint;
}

ModelPtr model_from_checkpoint(const Checkpoint& checkpoint, const std::filesystem::path& path) {
  auto model = build_model(checkpoint.config.model, checkpoint.config.ffn);
  load_module_tensors(*model, checkpoint.file, path, checkpoint.is_training_state ? "model." : "");
  return model;
}

}  // namespace exfusion
