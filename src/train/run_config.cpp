// Run configuration: cross-section checks, the main job's defaults, and layering (see
// run_config.h). Every field's reading and writing comes from its declaration.
#include "exfusion/train/run_config.h"

#include <torch/cuda.h>

#include "exfusion/config/config_file.h"
#include "exfusion/fusion/exfusion_ffn.h"
#include "exfusion/models/vit.h"
#include "exfusion/tasks/task.h"
#include "exfusion/util/error.h"

namespace exfusion {

bool is_registered_task(const std::string& name) { return task_kinds().contains(name); }

void TrainConfig::validate(const config::Location& at) const {
  if (min_lr > lr) config::fail(at, "min_lr", min_lr, "a value in [0, train.lr]");
}

void RunConfig::validate(const config::Location& at) const {
  model.options->validate_ffn(ffn, at.child("ffn"));
  const auto channels = static_cast<size_t>(model.options->input_shape().front());
  const auto data_at = at.child("data");
  if (!data.mean.empty() && data.mean.size() != channels) {
    config::fail(data_at, "mean", data.mean, "one value per channel");
  }
  if (!data.std.empty() && data.std.size() != channels) {
    config::fail(data_at, "std", data.std, "one value per channel");
  }
}

FastPathPolicy fast_path_policy(const TrainConfig& train) {
  FastPathPolicy policy;
  policy.expert_kernels = train.expert_kernels;
  policy.layer_norm_kernels = train.layer_norm_kernels;
  policy.bias_grad_epilogue = train.bias_grad_epilogue;
  return policy;
}

std::unique_ptr<Task> make_task(const RunConfig& config, const DataShard& shard) {
  // Page-locked batches let the copy to a CUDA device overlap the step.
  const bool pin_memory = config.train.device != "cpu" && torch::cuda::is_available();
  return task_kinds().make(config.task, {config.train.label_smoothing, config.train.batch_size,
                                         config.train.seed, shard, pin_memory});
}

RunConfig default_run_config() {
  RunConfig config;
  VisionTransformerOptions model;
  model.img_size = 28;
  model.in_chans = 1;
  model.patch_size = 7;
  model.embed_dim = 128;
  model.depth = 4;
  model.num_heads = 4;
  model.mlp_ratio = 2.0;
  model.num_classes = 10;
  config.model = ModelConfig::of("vit", model);
  config.ffn = FfnConfig::of(
      "exfusion",
      ExFusionOptions().variant(FusionVariant::kMemoryBank).num_experts(4).momentum(0.95));
  return config;
}

nlohmann::json to_json(const RunConfig& config) { return config::to_json(config); }

void apply_config(RunConfig& config, const nlohmann::json& patch, const std::string& source) {
  // Applied to a copy: a layer that fails leaves the config as it was.
  auto updated = config;
  config::apply(updated, patch, config::Location{source, ""});
  config = std::move(updated);
}

RunConfig run_config_from_json(const nlohmann::json& json, const std::string& source) {
  RunConfig config;
  apply_config(config, json, source);
  return config;
}

RunConfig build_run_config(RunConfig base, const ConfigLayers& layers) {
  if (!layers.file.empty()) apply_config(base, config::read_config_file(layers.file), layers.file);
  for (const auto& assignment : layers.assignments) {
    apply_config(base, config::parse_assignment(assignment), "--set " + assignment);
  }
  return base;
}

}  // namespace exfusion
