// Run configuration: cross-section checks, the main job's defaults, and layering (see
// run_config.h). Every field's reading and writing comes from its declaration.
#include "exfusion/train/run_config.h"

#include <torch/cuda.h>

#include <algorithm>

#include "exfusion/config/config_file.h"
#include "exfusion/fusion/exfusion_ffn.h"
#include "exfusion/models/vit.h"
#include "exfusion/tasks/task.h"
#include "exfusion/util/error.h"
#include "exfusion/util/json_input.h"

namespace exfusion {

bool is_registered_task(const std::string& name) { return task_kinds().contains(name); }

void TrainConfig::validate(const config::Location& at) const {
  if (min_lr > lr) config::fail(at, "min_lr", min_lr, "a value in [0, train.lr]");
}

void RunConfig::validate(const config::Location& at) const {
  model.options->validate_ffn(ffn, at.child("ffn"));
  if (data.task != task) {
    config::fail(at, "task", task,
                 "the task whose data section the config holds (" + data.task +
                     "): a task is changed through a config layer, which resets its data");
  }
  data.options->validate_with(*model.options, at.child("data"));
}

FastPathPolicy fast_path_policy(const TrainConfig& train) {
  FastPathPolicy policy;
  policy.expert_kernels = train.expert_kernels;
  policy.layer_norm_kernels = train.layer_norm_kernels;
  policy.bias_grad_epilogue = train.bias_grad_epilogue;
  policy.attention_kernels = train.attention_kernels;
  policy.rms_norm_kernels = train.rms_norm_kernels;
  policy.gated_activation_kernels = train.gated_activation_kernels;
  policy.activation_kernels = train.activation_kernels;
  policy.depthwise_conv_kernels = train.depthwise_conv_kernels;
  policy.cross_entropy_kernels = train.cross_entropy_kernels;
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
  const auto task = patch.is_object() ? patch.find("task") : patch.end();
  if (task != patch.end() && task->is_string() && is_registered_task(task->get<std::string>()) &&
      task->get<std::string>() != updated.task) {
    // Another task: its data section from its defaults, the patch's data keys over them.
    updated.data = DataSection::of_task(task->get<std::string>());
  }
  config::apply(updated, patch, config::Location{source, ""});
  config = std::move(updated);
}

RunConfig run_config_from_json(const nlohmann::json& json, const std::string& source) {
  RunConfig config;
  apply_config(config, json, source);
  return config;
}

namespace {

// (Values are at most 64 levels deep: parse_assignment refuses deeper ones.)
bool holds_null(const nlohmann::json& value) {
  if (value.is_null()) return true;
  if (!value.is_structured()) return false;
  return std::any_of(value.begin(), value.end(), [](const auto& v) { return holds_null(v); });
}

}  // namespace

RunConfig build_run_config(RunConfig base, const ConfigLayers& layers) {
  if (!layers.file.empty()) apply_config(base, config::read_config_file(layers.file), layers.file);
  std::vector<nlohmann::json> patches;
  for (const auto& assignment : layers.assignments) {
    patches.push_back(config::parse_assignment(assignment));
  }
  // The assignments together first, as one layer like a file's: then keys that depend on each
  // other (model.img_size and model.patch_size, data.preset and model.in_chans) may come in
  // any order. A merge would drop a null instead of refusing it, so those go one by one.
  const bool mergeable = std::none_of(patches.begin(), patches.end(), holds_null);
  if (patches.size() > 1 && mergeable) {
    auto merged = nlohmann::json::object();
    std::string source = "--set";
    for (size_t i = 0; i < patches.size(); ++i) {
      merged.merge_patch(patches[i]);
      source += " " + brief_text(layers.assignments[i]);
    }
    try {
      auto together = base;
      apply_config(together, merged, source);
      return together;
    } catch (const InputError&) {
      // One by one below, so that the error names the assignment it stops at.
    }
  }
  for (size_t i = 0; i < patches.size(); ++i) {
    apply_config(base, patches[i], "--set " + brief_text(layers.assignments[i]));
  }
  return base;
}

}  // namespace exfusion
