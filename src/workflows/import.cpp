// `exfusion import` (see import.h).
#include "exfusion/workflows/import.h"

#include "exfusion/config/config_file.h"
#include "exfusion/io/module_tensors.h"
#include "exfusion/models/model_formats.h"
#include "exfusion/train/run_files.h"
#include "exfusion/util/atomic_file.h"
#include "exfusion/util/error.h"

namespace exfusion {
namespace fs = std::filesystem;

nlohmann::json import_checkpoint(const ImportRun& run) {
  refuse_overwrite(run.out, run.force);
  // model.* is read with the tensors (it can contradict them); the rest goes into the config.
  auto model_patch = nlohmann::json::object();
  std::vector<std::pair<nlohmann::json, std::string>> config_patches;
  for (const auto& assignment : run.assignments) {
    auto patch = config::parse_assignment(assignment);
    if (patch.contains("ffn")) {
      throw InputError("--set " + assignment + ": an import writes a dense model (ffn.kind dense)");
    }
    if (patch.contains("model")) {
      model_patch.merge_patch(patch["model"]);
      patch.erase("model");
    }
    if (!patch.empty()) config_patches.emplace_back(std::move(patch), "--set " + assignment);
  }
  const auto imported = import_dense_model(run.source, model_patch, run.from);

  auto config = default_run_config();
  config.model = imported.model;
  config.ffn = FfnConfig{};
  if (imported.stored_config.is_object()) {  // ours: its normalisation and train section
    auto kept = imported.stored_config;
    kept.erase("model");
    kept.erase("ffn");
    apply_config(config, kept, imported.file.string() + " (metadata " + kConfigMetadataKey + ")");
  }
  if (!imported.run_defaults.empty()) {
    apply_config(config, imported.run_defaults, imported.file.parent_path().string());
  }
  for (const auto& [patch, source] : config_patches) apply_config(config, patch, source);
  config.validate({"", ""});
  const auto missing = config.data.options->missing_for_evaluation();
  if (!missing.empty()) {
    throw InputError(imported.file.string() + ": a " + imported.format + " checkpoint states no " +
                     missing);
  }
  for (const auto& file : dense_model_files(run.out, config, run.format)) {
    refuse_overwrite(file, run.force);
  }
  // Loading into the model the config builds is the check that eval will read the file.
  auto model = build_model(config.model, config.ffn);
  SafetensorsFile loaded;
  for (const auto& [name, tensor] : imported.tensors) loaded.tensors.emplace(name, tensor);
  load_module_tensors(*model, loaded, imported.file);
  if (run.out.has_parent_path()) fs::create_directories(run.out.parent_path());
  save_dense_model(run.out, module_tensors(*model), config, {}, run.format);
  return {{"imported", run.out.string()},
          {"source", imported.file.string()},
          {"from", imported.format},
          {"architecture", config.model.to_json()},
          {"params", count_parameters(*model)}};
}

}  // namespace exfusion
