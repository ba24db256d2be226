// `exfusion upcycle` as a library call: a dense checkpoint's FFNs turned into the experts of a
// multi-expert FFN kind (upcycling/upcycle.h: copy, Drop-Upcycling, noise; DeRS), written as
// init.safetensors and config.yaml for `exfusion train --init`.
#pragma once
#include <filesystem>
#include <nlohmann/json.hpp>
#include <ostream>
#include <string>
#include <vector>

namespace exfusion {

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
