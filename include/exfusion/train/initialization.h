// Where a fresh run's weights come from (the config's `init` section): a dense checkpoint
// upcycled into the run's multi-expert model (upcycling/upcycle.h), or an upcycled
// init.safetensors that `exfusion upcycle` (workflows/upcycle.h) wrote, loaded as it is.
#pragma once
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "exfusion/models/model.h"
#include "exfusion/train/run_config.h"
#include "exfusion/upcycling/upcycle.h"

namespace exfusion {

inline constexpr const char* kInitFile = "init.safetensors";
inline constexpr const char* kInitConfigFile = "config.yaml";
// Tensor prefix of the dense FFN weights an upcycled file records (DeRS's base).
inline constexpr const char* kDenseBasePrefix = "dense_base.";

// Sets `model` (built from `config`) from `config.init.from`: an upcycled init file is loaded
// (its tensors must match the model), a dense checkpoint (a file, or a run directory's
// model.safetensors) is upcycled by `config.init`. Throws InputError naming the file for
// anything else. Returns {"from", "method", "layers", "experts"} for the logs.
nlohmann::json initialize_model(ModelImpl& model, const RunConfig& config);

// The dense model's tensors by name when `path` (a file or run directory) is a dense checkpoint;
// nullopt for an upcycled, compressed or multi-expert one.
std::optional<DenseTensors> dense_tensors_if_dense(const std::filesystem::path& path);

// Where an upcycling starts: a dense model's tensors from `path` (a file or run directory:
// ours, or a format a model kind registers), the file they came from, and the run config they
// belong to (ours: the checkpoint's; from outside: the defaults with the architecture read,
// `model_patch` laid over it). Throws InputError for an upcycled or multi-expert checkpoint.
struct DenseStart {
  std::filesystem::path file;
  DenseTensors tensors;
  RunConfig config;
  std::string foreign_format;  // "" for ours
};
DenseStart read_dense_start(const std::filesystem::path& path, const nlohmann::json& model_patch);

}  // namespace exfusion
