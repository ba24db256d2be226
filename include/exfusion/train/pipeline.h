// The workflows behind the CLI's commands, as library calls: train → evaluate → fuse → evaluate
// the fused model → export → summary, and evaluating, fusing and describing a checkpoint. The
// CLI parses its arguments into these structs and calls one function; it holds no workflow.
#pragma once
#include <filesystem>
#include <nlohmann/json.hpp>
#include <ostream>
#include <string>
#include <vector>

#include "exfusion/train/run_config.h"

namespace exfusion {

struct TrainRun {
  RunConfig config;
  std::filesystem::path out;  // empty: runs/<run name>-<time>
  bool force = false;         // replace an existing run directory's outputs
  // A run directory to continue: from its newest checkpoint that reads back whole, with the
  // config saved in it (`config` and `out` are then not used).
  std::filesystem::path resume;
};

// Trains, evaluates, fuses (where every FFN has a dense form), evaluates the fused model and
// writes the run directory; reports on `report` (stdout) and shows progress on `progress`.
// Returns summary.json's content. Checkpoints go to <out>/checkpoints (train.checkpoint_every,
// each epoch's end, the end); a run killed at any point and resumed (`resume`) ends with the
// uninterrupted run's weights, exports and summary, and logs every step once. SIGINT/SIGTERM
// stop it after the current step with a checkpoint: Interrupted (util/interrupt_guard.h) is
// thrown. Everything that can refuse a run is checked before its directory is touched.
nlohmann::json run_training(const TrainRun& run, std::ostream& report, std::ostream& progress);

struct EvalRun {
  std::filesystem::path path;  // a run directory or a checkpoint file
  std::string config_file;     // laid over the checkpoint's config when given
  std::string data_dir;
  std::string device = "auto";
  std::filesystem::path save_logits;  // write test logits and labels here when set
  bool unfused = false;               // in a run directory: the training state
  bool force = false;
};
// {"checkpoint", "test_accuracy", "test_loss", "samples"}; evaluates under the fast-path policy
// of the checkpoint's config (train.*_kernels).
nlohmann::json evaluate_checkpoint(const EvalRun& run);

struct FuseRun {
  std::filesystem::path path;  // a run directory or its state.safetensors
  std::filesystem::path out;   // default: model.safetensors beside the state
  bool force = false;
};
nlohmann::json fuse_checkpoint(const FuseRun& run);

struct ImportRun {
  std::filesystem::path source;  // a run directory, a .safetensors file, a save_pretrained dir
  std::filesystem::path out;     // the dense checkpoint written, its description beside it
  std::string from = "auto";     // auto, exfusion or a registered format (timm, huggingface)
  // key.path=value: model.* read with the tensors (num_heads for a timm file), any other key
  // (data.mean, data.std) laid over the written checkpoint's config.
  std::vector<std::string> assignments;
  bool force = false;
};
// Writes a dense model from outside (models/model_formats.h: ours, or a format its model kind
// registers, e.g. timm's or Hugging Face's ViT) as our dense checkpoint (save_dense_model),
// which eval, info and training from it read.
nlohmann::json import_checkpoint(const ImportRun& run);

// Architecture, parameters, FLOPs and the model's metrics (fusion weights) of a checkpoint.
nlohmann::json describe_checkpoint(const std::filesystem::path& path);

}  // namespace exfusion
