// `exfusion info` (see info.h).
#include "exfusion/workflows/info.h"

#include "exfusion/layers/capabilities.h"
#include "exfusion/train/run_files.h"
#include "exfusion/train/training_state.h"
#include "exfusion/upcycling/ders_compression.h"

namespace exfusion {
namespace fs = std::filesystem;

nlohmann::json describe_checkpoint(const fs::path& run_path) {
  // A run directory without a dense model (an MoE run's) is described by its training state.
  const bool only_state = fs::is_directory(run_path) && !fs::exists(run_path / kModelFile) &&
                          fs::exists(run_path / kStateFile);
  const auto path = checkpoint_path(run_path, /*prefer_state=*/only_state);
  auto checkpoint = load_checkpoint(path);
  auto model = model_from_checkpoint(checkpoint, path);
  const auto& config = checkpoint.config;
  const auto stored_kind = checkpoint.file.metadata.find(kKindMetadataKey);
  const bool is_upcycled_init =
      stored_kind != checkpoint.file.metadata.end() && stored_kind->second == kUpcycledKind;
  nlohmann::json info = {
      {"checkpoint", path.string()},
      {"kind", !checkpoint.is_training_state ? kDenseModelKind
               : is_upcycled_init            ? kUpcycledKind
                                             : kTrainingStateKind},
      {"format", checkpoint.format},
      {"architecture", {{"model", config.model.to_json()}, {"ffn", config.ffn.to_json()}}},
      {"params", count_parameters(*model)},
      {"params_stored", count_stored_values(*model)},
      {"params_deployed", dense_model_parameters(*config.model.options)},
      {"forward_gflops_per_sample",
       config.model.options->forward_flops_per_sample(config.ffn) / 1e9},
      {"tensors", checkpoint.file.tensors.size()}};
  // Per token where the run's task has tokens: a language model's usual unit.
  if (const double tokens = make_task(config)->tokens_per_sample(*config.model.options);
      tokens > 0) {
    info["forward_gflops_per_token"] = info["forward_gflops_per_sample"].get<double>() / tokens;
  }
  auto sites = nlohmann::json::array();
  for (const auto& site : config.model.options->ffn_sites()) {
    sites.push_back({{"path", site.path},
                     {"kind", config.ffn.replaces(site.index) ? config.ffn.kind : "dense"},
                     {"dim", site.dim},
                     {"hidden", site.hidden},
                     {"gated", site.form.gated}});
  }
  info["ffn_sites"] = sites;
  const auto ders = checkpoint.file.metadata.find(kDersMetadataKey);
  if (ders != checkpoint.file.metadata.end()) {  // read (and checked) by load_checkpoint
    info["kind"] = kDersCompressedKind;
    info["ders"] = nlohmann::json::parse(ders->second);
  }
  const auto model_metrics = collect_metrics(*model);
  for (const auto& [group, values] : model_metrics.items()) info[group] = values;
  if (checkpoint.is_training_state) {
    // Read through the state's own loader: its checksum and the shapes of its scalars checked.
    if (checkpoint.file.tensors.count("trainer.step") != 0) {
      info["step"] = TrainingState::load(path).step;
    }
  }
  return info;
}

}  // namespace exfusion
