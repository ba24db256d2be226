// `exfusion eval` (see evaluate.h).
#include "exfusion/workflows/evaluate.h"

#include <cmath>
#include <iostream>

#include "exfusion/io/safetensors.h"
#include "exfusion/train/run_files.h"
#include "exfusion/util/atomic_file.h"
#include "exfusion/util/device.h"
#include "exfusion/util/error.h"
#include "exfusion/util/fast_paths.h"

namespace exfusion {

nlohmann::json evaluate_checkpoint(const EvalRun& run) {
  const auto path = checkpoint_path(run.path, run.unfused);
  if (!run.save_logits.empty()) refuse_overwrite(run.save_logits, run.force);
  auto checkpoint = load_checkpoint(path, run.config_file);
  auto& config = checkpoint.config;
  const auto task = make_task(config);
  if (!run.data_dir.empty()) {
    apply_config(config, {{"data", task->data_dir_patch(run.data_dir)}},
                 "--data-dir " + run.data_dir);
  }
  const auto missing = config.data.options->missing_for_evaluation();
  if (!missing.empty()) throw InputError(path.string() + ": its config states no " + missing);
  const auto device = resolve_device(run.device);
  auto model = model_from_checkpoint(checkpoint, path);
  model->to(device);
  auto data = task->load_data(config.data, *config.model.options, /*with_train=*/false);
  EvalResult result;
  {
    // The run's own fast-path settings, as in training.
    const FastPathScope fast_paths(fast_path_policy(config.train));
    result = task->evaluate(*model, *data.test, device, use_bf16(config.train.precision, device),
                            !run.save_logits.empty());
  }
  if (!run.save_logits.empty()) {
    NamedTensors saved{{"logits", result.outputs}, {"labels", data.test_targets}};
    saved.insert(saved.end(), data.test_inputs.begin(), data.test_inputs.end());
    save_safetensors(run.save_logits, saved);
  }
  if (!std::isfinite(result.loss)) {
    std::cerr << "exfusion eval: warning: the test loss is " << result.loss
              << ": the model's outputs are not finite (a diverged run?)" << std::endl;
  }
  nlohmann::json evaluation = {{"checkpoint", path.string()},
                               {"samples", result.samples()},
                               {"headline_metric", headline_description(task->metrics())}};
  for (const auto& [name, value] : result.metrics.items()) evaluation["test_" + name] = value;
  if (task->metrics().counts_tokens()) evaluation["tokens"] = result.sums.tokens;
  return evaluation;
}

}  // namespace exfusion
