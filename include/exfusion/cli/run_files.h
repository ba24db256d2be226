// The files a run directory holds and how checkpoints describe themselves: the model
// config travels in each safetensors file's metadata, so eval, fuse and info need nothing
// but the file. The fused export also gets a model.json with timm's constructor kwargs.
#pragma once
#include <filesystem>
#include <nlohmann/json.hpp>

#include "exfusion/io/safetensors.h"
#include "exfusion/train/run_config.h"

namespace exfusion {

inline constexpr const char* kConfigFile = "config.json";
inline constexpr const char* kStateFile = "state.safetensors";
inline constexpr const char* kModelFile = "model.safetensors";
inline constexpr const char* kModelConfigFile = "model.json";
inline constexpr const char* kMetricsFile = "metrics.jsonl";
inline constexpr const char* kSummaryFile = "summary.json";
inline constexpr const char* kConfigMetadataKey = "exfusion.config";

// The training state, unfused: model., optimizer. and trainer. tensors plus the config.
void save_training_state(const std::filesystem::path& path, const NamedTensors& state,
                         const RunConfig& config);
// The fused dense model under timm's names, with model.json written beside it.
void save_dense_model(const std::filesystem::path& path, const NamedTensors& tensors,
                      const RunConfig& config);

struct Checkpoint {
  SafetensorsFile file;
  RunConfig config;
  bool is_training_state = false;  // tensors under "model." rather than bare names
};

// Loads a checkpoint and the config in its metadata (or `config_override` when given).
Checkpoint load_checkpoint(const std::filesystem::path& path,
                           const std::string& config_override = "");

// Resolves a run directory to the file inside it (`prefer_state`: state, else model).
std::filesystem::path checkpoint_path(const std::filesystem::path& path, bool prefer_state);

// timm.models.vision_transformer.VisionTransformer(**kwargs) for the same architecture.
nlohmann::json timm_kwargs(const VisionTransformerOptions& model);

}  // namespace exfusion
