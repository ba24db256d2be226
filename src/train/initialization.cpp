// A fresh run's starting weights and `exfusion upcycle` (see initialization.h): the dense
// checkpoint's own model is built and read back through the usual checkpoint loader, so every
// dense file this build reads can be upcycled.
#include "exfusion/train/initialization.h"

#include <torch/torch.h>

#include "exfusion/config/config_file.h"
#include "exfusion/io/module_tensors.h"
#include "exfusion/io/safetensors.h"
#include "exfusion/models/registry.h"
#include "exfusion/train/run_files.h"
#include "exfusion/upcycling/ders_compression.h"
#include "exfusion/util/atomic_file.h"
#include "exfusion/util/error.h"

namespace exfusion {
namespace {

namespace fs = std::filesystem;

constexpr const char* kUpcycledKind = "upcycled-model";

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

}  // namespace

std::optional<DenseTensors> dense_tensors_if_dense(const fs::path& path) {
  const auto file = dense_file(path);
  const auto checkpoint = load_checkpoint(file);
  const bool dense = !is_upcycled(checkpoint) &&
                     (!checkpoint.is_training_state || checkpoint.config.ffn.is_dense());
  if (!dense) return std::nullopt;
  return dense_tensors_of(checkpoint, file);
}

nlohmann::json initialize_model(ModelImpl& model, const RunConfig& config) {
  const auto& init = config.init;
  const auto path = dense_file(init.from);
  auto checkpoint = load_checkpoint(path);
  nlohmann::json described = {{"from", path.string()}};
  if (is_upcycled(checkpoint)) {
    load_module_tensors(model, checkpoint.file, path, "model.");
    described["method"] = "loaded";
    return described;
  }
  const auto kind = checkpoint.file.metadata.find(kKindMetadataKey);
  if (kind != checkpoint.file.metadata.end() && kind->second == kDersCompressedKind) {
    load_module_tensors(model, checkpoint.file, path, "model.");  // synthesised by the loader
    described["method"] = "ders-decompressed";
    return described;
  }
  if (config.ffn.is_dense()) {
    // A dense run continued from a dense checkpoint: the baseline at the same budget.
    SafetensorsFile dense;
    for (const auto& [name, tensor] : dense_tensors_of(checkpoint, path)) {
      dense.tensors.emplace(name, tensor);
    }
    load_module_tensors(model, dense, path);
    described["method"] = "loaded";
    return described;
  }
  const auto report = upcycle_into(model, dense_tensors_of(checkpoint, path), init, path.string());
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
  auto checkpoint = load_checkpoint(path);
  if (is_upcycled(checkpoint)) {
    throw InputError(path.string() + ": already upcycled; upcycling starts from a dense model");
  }
  const auto dense = dense_tensors_of(checkpoint, path);

  // The dense run's config with the target kind, then the user's keys (init.*, ffn.*, train.*).
  auto config = checkpoint.config;
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
