// Where a fresh run's weights come from (the config's `init` section) and `exfusion upcycle`:
// a dense checkpoint upcycled into the run's multi-expert model (upcycling/upcycle.h), or an
// upcycled init.safetensors that `exfusion upcycle` wrote, loaded as it is.
#pragma once
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <ostream>
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

struct UpcycleRun {
  std::filesystem::path dense;           // a dense checkpoint or run directory
  std::string to;                        // the FFN kind: moe or exfusion
  std::vector<std::string> assignments;  // key.path=value over the dense run's config
  std::filesystem::path out;             // directory for init.safetensors and config.yaml
  bool force = false;
};

// Upcycles a dense checkpoint into `run.to` and writes <out>/init.safetensors (the model's
// tensors under "model.", the dense FFN weights they came from under "dense_base.") and
// <out>/config.yaml, which `exfusion train --init <out>` (or --config) continues from.
nlohmann::json upcycle_checkpoint(const UpcycleRun& run, std::ostream& report);

}  // namespace exfusion
