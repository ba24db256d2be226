// `exfusion fuse` (see fuse.h).
#include "exfusion/workflows/fuse.h"

#include "exfusion/io/module_tensors.h"
#include "exfusion/layers/capabilities.h"
#include "exfusion/train/run_files.h"
#include "exfusion/util/atomic_file.h"
#include "exfusion/util/error.h"

namespace exfusion {
namespace fs = std::filesystem;

nlohmann::json fuse_checkpoint(const FuseRun& run) {
  const auto path = checkpoint_path(run.path, /*prefer_state=*/true);
  const fs::path out = run.out.empty() ? path.parent_path() / kModelFile : run.out;
  auto checkpoint = load_checkpoint(path);
  if (!checkpoint.is_training_state) {
    throw InputError(path.string() + ": not a training state (already a dense model?)");
  }
  const auto dense_config = dense_twin(checkpoint.config);
  for (const auto& file : dense_model_files(out, dense_config, run.format)) {
    refuse_overwrite(file, run.force);
  }
  auto model = model_from_checkpoint(checkpoint, path);
  model->eval();
  auto fused = fuse_model(checkpoint.config.model, *model);
  save_dense_model(out, module_tensors(*fused), dense_config, run_class_names(path), run.format);
  nlohmann::json result = {{"fused", out.string()},
                           {"params_train", count_parameters(*model)},
                           {"params_fused", count_parameters(*fused)}};
  const auto model_metrics = collect_metrics(*model);
  for (const auto& [group, values] : model_metrics.items()) result[group] = values;
  return result;
}

}  // namespace exfusion
