// `exfusion fuse` as a library call: a training state's multi-expert FFNs collapsed into the
// dense model (fusion/fuse.h), written in an export format of its model kind as training writes
// it (models/export_formats.h).
#pragma once
#include <filesystem>
#include <nlohmann/json.hpp>

namespace exfusion {

struct FuseRun {
  std::filesystem::path path;  // a run directory or its state.safetensors
  std::filesystem::path out;   // default: model.safetensors beside the state
  bool force = false;
  std::string format;  // an export format of the model's kind ("": its first)
};
nlohmann::json fuse_checkpoint(const FuseRun& run);

}  // namespace exfusion
