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

DenseStart read_dense_start(const fs::path& path, const nlohmann::json& model_patch) {
  DenseStart start;
  start.file = dense_file(path);
  if (is_ours(start.file)) {
    auto checkpoint = load_checkpoint(start.file);
    if (is_upcycled(checkpoint)) {
      throw InputError(start.file.string() +
                       ": already upcycled; upcycling starts from a dense model");
    }
    start.tensors = dense_tensors_of(checkpoint, start.file);
    start.config = checkpoint.config;
    return start;
  }
  // timm or Hugging Face: the architecture from the file, `model_patch` laid over it.
  const auto imported = import_foreign(start.file, model_patch);
  start.tensors = dense_tensors_of(imported);
  start.config = default_run_config();
  start.config.model = imported.model;
  start.foreign_format = imported.format;
  return start;
}

}  // namespace exfusion
