// `exfusion export` (see export_mixture.h).
#include "exfusion/workflows/export_mixture.h"

#include "exfusion/io/module_tensors.h"
#include "exfusion/io/safetensors.h"
#include "exfusion/models/mixture_export.h"
#include "exfusion/train/run_files.h"
#include "exfusion/util/atomic_file.h"
#include "exfusion/util/error.h"

namespace exfusion {
namespace fs = std::filesystem;

nlohmann::json export_mixture(const ExportMixtureRun& run) {
  const auto path = checkpoint_path(run.path, /*prefer_state=*/true);
  auto checkpoint = load_checkpoint(path);
  if (!checkpoint.is_training_state) {
    throw InputError(path.string() +
                     ": not a training state (a dense model exports with "
                     "exfusion fuse --format, or is one already)");
  }
  const auto& config = checkpoint.config;
  const auto& entry = mixture_export_formats().find(config.model.kind);
  const auto sites = static_cast<int64_t>(config.model.options->ffn_sites().size());
  try {
    entry.format->check(config.ffn, sites);
  } catch (const InputError& error) {
    throw InputError(path.string() + ": " + error.what());
  }
  const fs::path out = run.out.empty() ? path.parent_path() / entry.format->directory() : run.out;
  const ExportContext context{
      config.model, to_json(config), nlohmann::json::object(), {}, kModelFile};
  const auto descriptions = entry.format->description_files(context, config.ffn);
  // Every refusal before the first file is written.
  refuse_overwrite(out / kModelFile, run.force);
  for (const auto& file : descriptions) refuse_overwrite(out / file.name, run.force);

  auto model = model_from_checkpoint(checkpoint, path);
  const auto tensors = entry.format->tensors(module_tensors(*model));
  fs::create_directories(out);
  save_safetensors(out / kModelFile, tensors, {{"format", "pt"}});
  for (const auto& file : descriptions) write_text_atomically(out / file.name, file.text);
  return {{"exported", out.string()},
          {"format", entry.name},
          {"tensors", tensors.size()},
          {"params", count_parameters(*model)}};
}

}  // namespace exfusion
