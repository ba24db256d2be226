// A fresh run's starting weights and `exfusion upcycle` (see initialization.h): one of our dense
// checkpoints is built and read back through the usual checkpoint loader; a timm or Hugging
// Face ViT through exfusion import's reader, so every dense file either reads can be upcycled.
#include "exfusion/train/initialization.h"

#include <torch/torch.h>

#include "exfusion/config/config_file.h"
#include "exfusion/io/module_tensors.h"
#include "exfusion/io/safetensors.h"
#include "exfusion/models/model_formats.h"
#include "exfusion/models/registry.h"
#include "exfusion/train/run_files.h"
#include "exfusion/upcycling/ders_compression.h"
#include "exfusion/util/atomic_file.h"
#include "exfusion/util/error.h"

namespace exfusion {
namespace {

namespace fs = std::filesystem;

// A run directory's fused model (or, for a dense run without one, its state), else the file.
fs::path dense_file(const fs::path& path) {
  if (fs::is_directory(path) && !fs::exists(path / kModelFile) && fs::exists(path / kStateFile)) {
    return path / kStateFile;
  }
  return checkpoint_path(path, /*prefer_state=*/false);
}

bool is_upcycled(const Checkpoint& checkpoint) {
  const auto kind = checkpoint.file.metadata.find(kKindMetadataKey);
  return kind != checkpoint.file.metadata.end() && kind->second == kUpcycledKind;
}

// The dense model's tensors by name; a checkpoint of a multi-expert model is refused.
DenseTensors dense_tensors_of(const Checkpoint& checkpoint, const fs::path& path) {
  if (checkpoint.is_training_state && checkpoint.config.ffn.kind != "dense") {
    throw InputError(path.string() + ": a training state of a '" + checkpoint.config.ffn.kind +
                     "' run; upcycling starts from a dense model (its fused model.safetensors, or "
                     "a run with ffn.kind: dense)");
  }
  auto dense_config = checkpoint.config;
  if (!checkpoint.is_training_state) dense_config.ffn = FfnConfig();
  Checkpoint as_dense = checkpoint;
  as_dense.config = dense_config;
  const auto model = model_from_checkpoint(as_dense, path);
  DenseTensors tensors;
  for (const auto& [name, tensor] : module_tensors(*model)) tensors.emplace(name, tensor);
  return tensors;
}

// Whether `file` is one of ours (its metadata holds our config) rather than a timm or Hugging
// Face file.
bool is_ours(const fs::path& file) {
  return load_safetensors_metadata(file).count(kConfigMetadataKey) != 0;
}

// A timm or Hugging Face ViT's tensors under our names, checked against `model` (the model
// section of the run that starts from it) where given.
ImportedModel import_foreign(const fs::path& file, const nlohmann::json& model_patch) {
  auto patch = model_patch;
  patch.erase("kind");
  return import_dense_model(file, patch);
}

DenseTensors dense_tensors_of(const ImportedModel& imported) {
  DenseTensors tensors;
  for (const auto& [name, tensor] : imported.tensors) tensors.emplace(name, tensor);
  return tensors;
}

}  // namespace

std::optional<DenseTensors> dense_tensors_if_dense(const fs::path& path) {
  const auto file = dense_file(path);
  if (!is_ours(file)) return dense_tensors_of(import_foreign(file, nlohmann::json::object()));
  const auto checkpoint = load_checkpoint(file);
  const bool dense = !is_upcycled(checkpoint) &&
                     (!checkpoint.is_training_state || checkpoint.config.ffn.is_dense());
  if (!dense) return std::nullopt;
  return dense_tensors_of(checkpoint, file);
}

nlohmann::json initialize_model(ModelImpl& model, const RunConfig& config) {
  const auto& init = config.init;
  const auto path = dense_file(init.from);
  nlohmann::json described = {{"from", path.string()}};
  DenseTensors dense;
  if (is_ours(path)) {
    auto checkpoint = load_checkpoint(path);
    const auto kind = checkpoint.file.metadata.find(kKindMetadataKey);
    const bool ders = kind != checkpoint.file.metadata.end() && kind->second == kDersCompressedKind;
    if (is_upcycled(checkpoint) || ders) {
      // Tensors of this run's model as they are (a DeRS file's synthesised by the loader).
      load_module_tensors(model, checkpoint.file, path, "model.");
      described["method"] = ders ? "ders-decompressed" : "loaded";
      return described;
    }
    dense = dense_tensors_of(checkpoint, path);
  } else {
    const auto imported = import_foreign(path, config.model.to_json());
    described["format"] = imported.format;
    dense = dense_tensors_of(imported);
  }
  if (config.ffn.is_dense()) {
    // A dense run continued from a dense checkpoint: the baseline at the same budget.
    SafetensorsFile file;
    for (const auto& [name, tensor] : dense) file.tensors.emplace(name, tensor);
    load_module_tensors(model, file, path);
    described["method"] = "loaded";
    return described;
  }
  const auto report = upcycle_into(model, dense, init, path.string());
  described["method"] = config::to_json(init)["method"];
  described["layers"] = report.layers;
  described["experts"] = report.experts;
  return described;
}

nlohmann::json upcycle_checkpoint(const UpcycleRun& run, std::ostream& report) {
  const auto init_file = run.out / kInitFile, config_file = run.out / kInitConfigFile;
  refuse_overwrite(init_file, run.force);
  refuse_overwrite(config_file, run.force);
  const auto path = dense_file(run.dense);
  RunConfig config;
  DenseTensors dense;
  if (is_ours(path)) {
    auto checkpoint = load_checkpoint(path);
    if (is_upcycled(checkpoint)) {
      throw InputError(path.string() + ": already upcycled; upcycling starts from a dense model");
    }
    dense = dense_tensors_of(checkpoint, path);
    config = checkpoint.config;
  } else {
    // timm or Hugging Face: the architecture from the file (model.* keys of --set laid over
    // it, as exfusion import does); the rest, data normalisation included, from --set.
    auto model_patch = nlohmann::json::object();
    for (const auto& assignment : run.assignments) {
      const auto patch = config::parse_assignment(assignment);
      if (patch.contains("model")) model_patch.merge_patch(patch["model"]);
    }
    const auto imported = import_foreign(path, model_patch);
    dense = dense_tensors_of(imported);
    config = default_run_config();
    config.model = imported.model;
  }

  // The dense run's config with the target kind, then the user's keys (init.*, ffn.*, train.*).
  apply_config(config, {{"ffn", {{"kind", run.to}}}}, "upcycle --to " + run.to);
  config = build_run_config(config, {"", run.assignments});
  config.init.from = fs::absolute(path).string();
  torch::manual_seed(static_cast<uint64_t>(config.train.seed));
  auto model = build_model(config.model, config.ffn);
  const auto upcycled = upcycle_into(*model, dense, config.init, path.string());

  NamedTensors tensors;
  for (const auto& [name, tensor] : module_tensors(*model))
    tensors.emplace_back("model." + name, tensor);
  for (const auto& [name, tensor] : upcycled.dense_base) {
    tensors.emplace_back(kDenseBasePrefix + name, tensor);
  }
  // What `train --init` continues with: this file as the init, the rest of the config as is.
  auto continued = config;
  continued.init.from = fs::absolute(init_file).string();
  fs::create_directories(run.out);
  save_safetensors(init_file, tensors,
                   {{kConfigMetadataKey, to_json(continued).dump()},
                    {kKindMetadataKey, kUpcycledKind},
                    {"exfusion.upcycled_from", fs::absolute(path).string()}});
  write_text_atomically(config_file, config::to_yaml(to_json(continued)));

  int64_t dense_params = 0;
  for (const auto& [name, tensor] : dense) dense_params += tensor.numel();
  nlohmann::json summary = {{"from", path.string()},
                            {"to", config.ffn.run_name()},
                            {"method", config::to_json(config.init)},
                            {"layers", upcycled.layers},
                            {"experts", upcycled.experts},
                            {"params_dense", dense_params},
                            {"params_upcycled", count_parameters(*model)},
                            {"params_upcycled_stored", count_stored_values(*model)},
                            {"init", init_file.string()},
                            {"config", config_file.string()}};
  report << "upcycled " << upcycled.layers << " FFNs of " << path.string() << " into "
         << config.ffn.run_name() << " (" << upcycled.experts << " experts each): " << dense_params
         << " -> " << count_parameters(*model) << " parameters\n"
         << "continue with: exfusion train --init " << run.out.string() << "\n";
  return summary;
}

}  // namespace exfusion
