// Everything a run is made of (model, FFN kind, data, training), each field declared once
// (config/fields.h): its default, type, range, help text and JSON/YAML form all come from the
// declaration. A run's config is built in layers — defaults, then a config file, then
// `--set key=value` overrides — and each layer's errors name its source and the key path.
#pragma once
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "exfusion/config/fields.h"
#include "exfusion/models/ffn_config.h"
#include "exfusion/models/model.h"
#include "exfusion/tasks/task.h"
#include "exfusion/train/optimizer.h"
#include "exfusion/train/schedule.h"
#include "exfusion/upcycling/upcycle.h"
#include "exfusion/util/fast_paths.h"

namespace exfusion {

// Whether `train.task` names a registered task (tasks/task.h).
bool is_registered_task(const std::string& name);

struct TrainConfig {
  int64_t epochs = 5;
  int64_t max_steps = 0;  // > 0 stops early (smoke tests); the schedule still spans `epochs`
  int64_t batch_size = 128;
  int64_t accumulation_steps = 1;  // batches per optimizer step (nanoT5's grad_acc)
  double lr = 2e-3;
  double min_lr = 1e-5;
  double warmup_epochs = 0.5;
  double warmup_start = 0.0;  // share of lr the warmup starts from (nanoT5: 0.5)
  ScheduleKind schedule = ScheduleKind::kCosine;
  UpdateRule optimizer = UpdateRule::kAdamW;
  double weight_decay = 0.05;
  double label_smoothing = 0.1;
  double clip_grad = 1.0;  // global grad-norm limit; 0 disables
  int64_t seed = 0;
  int64_t log_every = 50;          // steps between metric lines
  int64_t checkpoint_every = 0;    // steps between checkpoints, besides each epoch's end; 0: none
  int64_t keep_checkpoints = 2;    // the newest checkpoints kept in <run>/checkpoints
  bool tensorboard = true;         // TensorBoard event files in <run>/tb
  std::string device = "auto";     // auto, cpu, cuda, cuda:N
  std::string precision = "auto";  // auto (bf16 on CUDA, fp32 on CPU), fp32, bf16
  int64_t threads = 0;             // CPU intra-op threads; 0 keeps LibTorch's default
  bool expert_kernels = true;
  bool layer_norm_kernels = true;
  bool bias_grad_epilogue = true;
  bool attention_kernels = true;
  bool rms_norm_kernels = true;
  bool gated_activation_kernels = true;
  bool cross_entropy_kernels = true;
  bool activation_kernels = true;
  bool depthwise_conv_kernels = true;
  bool cuda_graph = false;
  int64_t dist_timeout_s = 300;  // data parallel: how long a rank waits for the others
  double dist_bucket_mb = 25.0;  // data parallel: gradient bucket size (DDP's bucket_cap_mb)

  template <class Fields>
  void fields(Fields& f) {
    f("epochs", epochs, "training epochs", config::in_range<int64_t>(1, 1000000));
    f("max_steps", max_steps,
      "stop after this many steps; 0 = no limit (the schedule still "
      "spans epochs)",
      config::Check<int64_t>{"0 (no limit) or a positive step count",
                             [](int64_t v) { return v >= 0; }});
    f("batch_size", batch_size, "batch size", config::in_range<int64_t>(1, 1 << 20));
    f("accumulation_steps", accumulation_steps,
      "batches whose gradients add up to one optimizer step (nanoT5's grad_acc): a step sees "
      "batch_size × this samples per rank; epochs, the schedule and log_every count steps",
      config::in_range<int64_t>(1, 1 << 16));
    f("lr", lr, "peak learning rate",
      config::Check<double>{"a positive learning rate", [](double v) { return v > 0; }});
    f("min_lr", min_lr, "learning rate at the end of the cosine decay",
      config::non_negative<double>());
    f("warmup_epochs", warmup_epochs, "linear warmup length in epochs",
      config::in_range<double>(0.0, 1000000.0));
    f("warmup_start", warmup_start,
      "the share of lr the warmup starts from (0: DeiT's; nanoT5's cosine: 0.5)",
      config::in_range<double>(0.0, 1.0));
    f("schedule", schedule,
      "cosine: warmup, then cosine to min_lr; inverse_sqrt: T5's legacy min(1e-2, 1/sqrt(step)), "
      "then linear to 0 over the last 10 % (ignores lr, as nanoT5's legacy)",
      schedule_kind_names());
    f("optimizer", optimizer,
      "adamw, or adamw_scale: nanoT5's AdamWScale (each step times max(1e-3, RMS(param)), "
      "eps 1e-6)",
      update_rule_names());
    f("weight_decay", weight_decay, "AdamW weight decay (not on norms, biases, embeddings, m)",
      config::non_negative<double>());
    f("label_smoothing", label_smoothing, "label smoothing of the cross-entropy",
      config::in_range<double>(0.0, 1.0, true));
    f("clip_grad", clip_grad, "global gradient-norm limit; 0 = off",
      config::Check<double>{"0 (off) or a positive norm", [](double v) { return v >= 0; }});
    f("seed", seed, "random seed (init, data order, augmentation)");
    f("log_every", log_every, "steps between metric lines", config::at_least<int64_t>(1));
    f("checkpoint_every", checkpoint_every,
      "steps between checkpoints in <run>/checkpoints (besides each epoch's end and the "
      "last step); 0 = epoch ends only",
      config::Check<int64_t>{"0 (epoch ends only) or a positive step count",
                             [](int64_t v) { return v >= 0; }});
    f("keep_checkpoints", keep_checkpoints,
      "how many of the newest checkpoints are kept (train --resume falls back to an older one "
      "when the newest is damaged)",
      config::in_range<int64_t>(1, 1000));
    f("tensorboard", tensorboard,
      "write TensorBoard event files to <run>/tb while training (tensorboard --logdir)");
    // The spelling is checked here, where the config's source is known; whether a CUDA
    // device is there is known only where the run starts (resolve_device).
    f("device", device, "auto, cpu, cuda or cuda:N",
      config::Check<std::string>{"auto, cpu, cuda or cuda:N", [](const std::string& v) {
                                   if (v == "auto" || v == "cpu" || v == "cuda") return true;
                                   const auto index = v.substr(std::min<size_t>(v.size(), 5));
                                   return v.rfind("cuda:", 0) == 0 && !index.empty() &&
                                          index.size() <= 3 &&
                                          index.find_first_not_of("0123456789") ==
                                              std::string::npos;
                                 }});
    f("precision", precision, "auto (bf16 on CUDA, fp32 on CPU), fp32 or bf16",
      config::one_of({"auto", "fp32", "bf16"}));
    f("threads", threads, "CPU intra-op threads; 0 = LibTorch's default",
      config::Check<int64_t>{"0 (default) or a thread count up to 1024",
                             [](int64_t v) { return v >= 0 && v <= 1024; }});
    f("expert_kernels", expert_kernels,
      "expert banks through the CUDA kernels and the factored AdamW step; false = plain "
      "autograd and ATen");
    f("layer_norm_kernels", layer_norm_kernels, "LayerNorm through its CUDA kernels on CUDA");
    f("bias_grad_epilogue", bias_grad_epilogue,
      "on CUDA, bias gradients from the weight-gradient GEMM's cuBLASLt epilogue");
    f("attention_kernels", attention_kernels,
      "on the CPU, self-attention of sequences up to 64 tokens through its own kernels; false "
      "= scaled_dot_product_attention");
    f("rms_norm_kernels", rms_norm_kernels,
      "on the CPU, float32 RMS norms (T5) through their own kernels; false = the ATen composite");
    f("gated_activation_kernels", gated_activation_kernels,
      "on the CPU, a gated FFN's float32 act(gate) * up through its own kernels; false = the "
      "ATen composite");
    f("cross_entropy_kernels", cross_entropy_kernels,
      "on the CPU, a language model's float32 token cross-entropy through its own kernels; "
      "false = ATen's cross_entropy_loss");
    f("activation_kernels", activation_kernels,
      "on the CPU, a plain FFN's float32 activation (GELU, ReLU, ...) through its own kernels, "
      "which keep its derivative for the backward; false = ATen's activation");
    f("depthwise_conv_kernels", depthwise_conv_kernels,
      "on the CPU, PVT v2's float32 FFN depthwise convolution through its own kernels on the "
      "tokens' layout; false = ATen's conv2d");
    f("cuda_graph", cuda_graph, "capture the training step in a CUDA graph and replay it");
    f("dist_timeout_s", dist_timeout_s,
      "data parallel (torchrun): seconds a rank waits for the others before it names the rank "
      "that stopped and exits",
      config::in_range<int64_t>(1, 86400));
    f("dist_bucket_mb", dist_bucket_mb,
      "data parallel (torchrun): MB of gradients per all-reduce bucket, as DDP's bucket_cap_mb",
      config::in_range<double>(0.001, 4096.0));
  }
  void validate(const config::Location& at) const;
};

struct RunConfig {
  std::string task = kDefaultTask;
  ModelConfig model;
  FfnConfig ffn;
  DataSection data;  // the task's: a config that names another task starts from its defaults
  TrainConfig train;
  InitConfig init;

  template <class Fields>
  void fields(Fields& f) {
    f("task", task, "what is learned: " + config::join_or(task_kinds().names()),
      config::Check<std::string>{
          "a registered task (" + config::join_or(task_kinds().names()) + ")",
          &is_registered_task});
    f("model", model, "the model: kind and its architecture");
    f("ffn", ffn, "the FFN kind of the model's blocks and its options");
    f("data", data, "the task's data: its files and their preparation (keys per task)");
    f("train", train, "optimisation and the training loop");
    f("init", init, "where a fresh run's weights start: a dense checkpoint upcycled, or fresh");
  }
  // Checks across sections (FFN layers against the model's depth, the data against the model).
  void validate(const config::Location& at) const;
};

// The task `config.task` names, with the run's training settings; `shard` picks this rank's
// part of every global batch under data parallelism.
std::unique_ptr<Task> make_task(const RunConfig& config, const DataShard& shard = {});

// The fast paths train.expert_kernels, train.layer_norm_kernels, train.bias_grad_epilogue
// and train.attention_kernels allow: the policy of the FastPathScope (util/fast_paths.h) that
// training and evaluation open.
FastPathPolicy fast_path_policy(const TrainConfig& train);

// The default run: the README's main job (a small ViT with ExFusion-mb, N = 4, δ = 0.95,
// on Fashion-MNIST).
RunConfig default_run_config();

nlohmann::json to_json(const RunConfig& config);
// Lays `patch` over `config`; `source` (a file name, "--set key=value") prefixes every error.
// A patch that names another task starts that task's data section from its defaults.
void apply_config(RunConfig& config, const nlohmann::json& patch, const std::string& source);
// A complete config read from JSON, starting from the struct defaults (a ViT-B/16, dense).
RunConfig run_config_from_json(const nlohmann::json& json, const std::string& source);

// One layer of a run's config: a file (JSON or YAML) or a `key.path=value` assignment.
struct ConfigLayers {
  std::string file;                      // empty: none
  std::vector<std::string> assignments;  // applied after the file; a later one wins
};
// `base`, then the file, then the assignments: as one layer (so that keys which depend on each
// other may come in any order), or, where that layer is refused, one by one in order, so that
// the error names the assignment at fault.
RunConfig build_run_config(RunConfig base, const ConfigLayers& layers);

}  // namespace exfusion
