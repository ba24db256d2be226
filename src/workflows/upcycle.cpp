// `exfusion upcycle` (see upcycle.h).
#include "exfusion/workflows/upcycle.h"

#include <torch/utils.h>

#include "exfusion/config/config_file.h"
#include "exfusion/io/module_tensors.h"
#include "exfusion/io/safetensors.h"
#include "exfusion/train/initialization.h"
#include "exfusion/train/run_files.h"
#include "exfusion/upcycling/upcycle.h"
#include "exfusion/util/atomic_file.h"

namespace exfusion {
namespace fs = std::filesystem;

nlohmann::json upcycle_checkpoint(const UpcycleRun& run, std::ostream& report) {
  const auto init_file = run.out / kInitFile, config_file = run.out / kInitConfigFile;
  refuse_overwrite(init_file, run.force);
  refuse_overwrite(config_file, run.force);
  // From outside, the model.* keys of --set are laid over the architecture read, as exfusion
  // import does; the rest, data normalisation included, comes with the other keys below.
  auto model_patch = nlohmann::json::object();
  for (const auto& assignment : run.assignments) {
    const auto patch = config::parse_assignment(assignment);
    if (patch.contains("model")) model_patch.merge_patch(patch["model"]);
  }
  auto start = read_dense_start(run.dense, model_patch);
  const auto& path = start.file;
  const auto& dense = start.tensors;
  auto config = start.config;

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
