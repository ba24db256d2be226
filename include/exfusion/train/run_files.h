// The files a run directory holds and how checkpoints describe themselves: the run's config
// travels in each safetensors file's metadata (with the file's format version), so eval, fuse
// and info need nothing but the file. The fused export is written in a format of the model's
// kind (models/export_formats.h).
#pragma once
#include <filesystem>
#include <nlohmann/json.hpp>
#include <vector>

#include "exfusion/io/run_names.h"
#include "exfusion/io/safetensors.h"
#include "exfusion/models/model.h"
#include "exfusion/train/run_config.h"

namespace exfusion {

// The parameters of the dense model a checkpoint of `model` fuses into (or is): those outside
// its FFNs and each FFN site's dense FFN, from the options alone (info, the size check below).
double dense_model_parameters(const ModelOptions& model);

// The config a fused export is written with: the run's, with dense FFNs.
RunConfig dense_twin(const RunConfig& config);

// The dense model in export format `format`, one its model kind registers ("": the kind's first;
// models/export_formats.h): the weights at `path`, the run's config in their metadata (so eval,
// fuse and info need nothing but the file), the format's description files beside them (the
// ViT's model.json with timm's kwargs, normalisation and `class_names`, label i's name).
void save_dense_model(const std::filesystem::path& path, const NamedTensors& tensors,
                      const RunConfig& config, const std::vector<std::string>& class_names = {},
                      const std::string& format = "");
// The files save_dense_model(path, ..., config, ..., format) writes: the weights, then the
// descriptions; InputError naming the kind's formats for a format it has not.
std::vector<std::filesystem::path> dense_model_files(const std::filesystem::path& path,
                                                     const RunConfig& config,
                                                     const std::string& format = "");
// The class names of the run a checkpoint belongs to: `classes.json` beside it (state.safetensors)
// or one level up (checkpoints/step-*.safetensors); empty when its run has none.
std::vector<std::string> run_class_names(const std::filesystem::path& checkpoint);

// A run's checkpoints: `<dir>/step-<9-digit step>.safetensors`, listed newest first.
std::filesystem::path checkpoint_file(const std::filesystem::path& dir, int64_t step);
struct CheckpointEntry {
  std::filesystem::path path;
  int64_t step;
};
std::vector<CheckpointEntry> list_checkpoints(const std::filesystem::path& dir);

struct Checkpoint {
  SafetensorsFile file;
  RunConfig config;
  // Tensors under "model." rather than bare names: a training state, and an upcycled init or a
  // DeRS-compressed file, which eval, fuse and info read as one.
  bool is_training_state = false;
  int64_t format = 1;
};

// Loads a checkpoint and the config in its metadata, with the config file `config_override`
// (JSON or YAML) laid over it when given.
Checkpoint load_checkpoint(const std::filesystem::path& path,
                           const std::string& config_override = "");
// The checkpoint's model with its tensors loaded.
ModelPtr model_from_checkpoint(const Checkpoint& checkpoint, const std::filesystem::path& path);

// A config as a file of format `format` stored it, in this build's layout: format 1 kept every
// FFN kind's keys in one flat ffn section; only the named kind's are kept.
nlohmann::json upgrade_stored_config(nlohmann::json config, int64_t format);

// Resolves a run directory to the file inside it (`prefer_state`: state, else model).
std::filesystem::path checkpoint_path(const std::filesystem::path& path, bool prefer_state);

}  // namespace exfusion
