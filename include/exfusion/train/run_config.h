// Everything a run is made of (model, FFN kind, data, training), with one JSON form used
// by config files, `--set key=value` overrides and the run directory's config.json.
// Reading is strict: an unknown key or a value of the wrong type names its source and key.
#pragma once
#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "exfusion/models/vit.h"
#include "exfusion/util/fast_paths.h"

namespace exfusion {

struct DataConfig {
  std::string dir = "/usr/share/datasets/fashion-mnist";
  // Explicit IDX files override `dir`; all four or none.
  std::string train_images, train_labels, test_images, test_labels;
  bool augment = false;  // short schedules learn faster without it
  int64_t crop_padding = 2;
  bool horizontal_flip = true;
  std::vector<double> mean, std;  // per channel; empty: measured on the training set
  int64_t prefetch = 2;
};

struct TrainConfig {
  int64_t epochs = 5;
  int64_t max_steps = 0;  // > 0 stops early (smoke tests); the schedule still spans `epochs`
  int64_t batch_size = 128;
  double lr = 2e-3;
  double min_lr = 1e-5;
  double warmup_epochs = 0.5;
  double weight_decay = 0.05;
  double label_smoothing = 0.1;
  double clip_grad = 1.0;  // global grad-norm limit; 0 disables
  int64_t seed = 0;
  int64_t log_every = 50;          // steps between metric lines
  std::string device = "auto";     // auto, cpu, cuda, cuda:N
  std::string precision = "auto";  // auto (bf16 on CUDA, fp32 on CPU), fp32, bf16
  int64_t threads = 0;             // CPU intra-op threads; 0 keeps LibTorch's default
  // Expert banks through their CUDA kernels and the factored AdamW step (no N per-expert
  // gradients); false runs plain autograd and ATen (same math, for comparison).
  bool expert_kernels = true;
  // LayerNorm through its CUDA kernels (layers/layer_norm.h); false runs LibTorch's.
  bool layer_norm_kernels = true;
  // Linear layers' bias gradients from the weight-gradient GEMM's cuBLASLt epilogue on CUDA
  // (layers/linear.h); false runs at::linear's autograd (a separate reduction kernel).
  bool bias_grad_epilogue = true;
  // Captures the whole training step (forward, backward, clipping, AdamW) into a CUDA graph
  // after a few eager warm-up steps and replays it; CUDA only (train/cuda_graph_step.h).
  bool cuda_graph = false;
};

// The fast paths `train` switches on: the policy of the FastPathScope that training and
// evaluation of its run open.
inline FastPathPolicy fast_path_policy(const TrainConfig& train) {
  FastPathPolicy policy;
  policy.expert_kernels = train.expert_kernels;
  policy.layer_norm_kernels = train.layer_norm_kernels;
  policy.bias_grad_epilogue = train.bias_grad_epilogue;
  return policy;
}

struct RunConfig {
  VisionTransformerOptions model;
  DataConfig data;
  TrainConfig train;
};

// The default run: the README's main job (a small ViT with ExFusion-mb, N = 4, δ = 0.95,
// on Fashion-MNIST).
RunConfig default_run_config();
nlohmann::json default_run_config_json();

nlohmann::json to_json(const RunConfig& config);
nlohmann::json model_to_json(const VisionTransformerOptions& model);
// Parses a complete config; `source` (a file name or "--set") prefixes every error.
RunConfig run_config_from_json(const nlohmann::json& json, const std::string& source);
VisionTransformerOptions model_from_json(const nlohmann::json& json, const std::string& source);

// Overlays `patch` onto `base` key by key. Every key in `patch` must exist in `base`
// (InputError "<source>: unknown key 'train.epoch'").
void merge_config(nlohmann::json& base, const nlohmann::json& patch, const std::string& source);

// Parses `key.path=value` (value as JSON when it parses, else as a string) into a patch.
nlohmann::json parse_assignment(const std::string& assignment);

nlohmann::json read_json_file(const std::string& path);

}  // namespace exfusion
