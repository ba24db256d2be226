// Run-directory files and self-describing checkpoints (see run_files.h).
#include "exfusion/train/run_files.h"

#include <algorithm>
#include <cstdio>
#include <iomanip>
#include <sstream>

#include "exfusion/config/config_file.h"
#include "exfusion/io/module_tensors.h"
#include "exfusion/models/export_formats.h"
#include "exfusion/models/registry.h"
#include "exfusion/train/training_state.h"
#include "exfusion/upcycling/ders_compression.h"
#include "exfusion/util/atomic_file.h"
#include "exfusion/util/error.h"
#include "exfusion/util/json_input.h"

namespace exfusion {

double dense_model_parameters(const ModelOptions& model) {
  double total = model.parameters_outside_ffns();
  for (const auto& site : model.ffn_sites()) total += site.dense_parameters();
  return total;
}

RunConfig dense_twin(const RunConfig& config) {
  auto dense = config;
  dense.ffn = FfnConfig{};
  return dense;
}

namespace {

ExportContext export_context(const std::filesystem::path& path, const RunConfig& config,
                             std::vector<std::string> class_names) {
  return {config.model, to_json(config), config.data.options->evaluation_entries(),
          std::move(class_names), path.filename().string()};
}

// Where a format's files go: beside the weights, or its own directory there.
std::filesystem::path export_directory(const std::filesystem::path& path,
                                       const ExportFormat& format) {
  const auto directory = format.directory();
  return directory.empty() ? path.parent_path() : path.parent_path() / directory;
}

// The weights at `path` as `target` too: a hard link, or a copy where the file system has none.
void link_weights(const std::filesystem::path& path, const std::filesystem::path& target) {
  replace_file_atomically(target, [&](const std::filesystem::path& temporary) {
    std::filesystem::remove(temporary);
    std::error_code error;
    std::filesystem::create_hard_link(path, temporary, error);
    if (error) std::filesystem::copy_file(path, temporary);
  });
}

}  // namespace

std::vector<std::filesystem::path> dense_model_files(const std::filesystem::path& path,
                                                     const RunConfig& config,
                                                     const std::string& format) {
  const auto entry = export_formats().find(config.model.kind, format);
  const auto directory = export_directory(path, *entry.format);
  std::vector<std::filesystem::path> files{path};
  if (!entry.format->directory().empty()) files.push_back(directory / kModelFile);
  for (const auto& file : entry.format->description_files(export_context(path, config, {}))) {
    files.push_back(directory / file.name);
  }
  return files;
}

void save_dense_model(const std::filesystem::path& path, const NamedTensors& tensors,
                      const RunConfig& config, const std::vector<std::string>& class_names,
                      const std::string& format) {
  const auto entry = export_formats().find(config.model.kind, format);
  const auto descriptions =
      entry.format->description_files(export_context(path, config, class_names));
  save_safetensors(path, tensors,
                   {{kConfigMetadataKey, to_json(config).dump()},
                    {kKindMetadataKey, kDenseModelKind},
                    {kFormatMetadataKey, kModelFileFormat},
                    {"format", "pt"}});
  const auto directory = export_directory(path, *entry.format);
  if (!entry.format->directory().empty()) {
    std::filesystem::create_directories(directory);
    link_weights(path, directory / kModelFile);
  }
  for (const auto& file : descriptions) write_text_atomically(directory / file.name, file.text);
}

std::vector<std::string> run_class_names(const std::filesystem::path& checkpoint) {
  auto dir = checkpoint.parent_path();
  if (!std::filesystem::exists(dir / kClassesFile) && dir.filename() == kCheckpointDir) {
    dir = dir.parent_path();
  }
  const auto file = dir / kClassesFile;
  if (!std::filesystem::exists(file)) return {};
  const auto names = config::read_config_file(file);
  if (!names.is_array()) throw InputError(file.string() + ": expected a list of class names");
  std::vector<std::string> class_names;
  for (const auto& name : names) {
    if (!name.is_string()) throw InputError(file.string() + ": expected a list of class names");
    class_names.push_back(name.get<std::string>());
  }
  return class_names;
}

std::filesystem::path checkpoint_file(const std::filesystem::path& dir, int64_t step) {
  char name[48];
  std::snprintf(name, sizeof name, "step-%09lld.safetensors", static_cast<long long>(step));
  return dir / name;
}

std::vector<CheckpointEntry> list_checkpoints(const std::filesystem::path& dir) {
  std::vector<CheckpointEntry> found;
  std::error_code error;
  for (const auto& entry : std::filesystem::directory_iterator(dir, error)) {
    const auto name = entry.path().filename().string();
    long long step = -1;
    int consumed = 0;
    if (std::sscanf(name.c_str(), "step-%9lld.safetensors%n", &step, &consumed) == 1 &&
        static_cast<size_t>(consumed) == name.size() && entry.is_regular_file()) {
      found.push_back({entry.path(), step});
    }
  }
  std::sort(found.begin(), found.end(),
            [](const CheckpointEntry& a, const CheckpointEntry& b) { return a.step > b.step; });
  return found;
}

std::filesystem::path checkpoint_path(const std::filesystem::path& path, bool prefer_state) {
  if (!std::filesystem::is_directory(path)) {
    if (!std::filesystem::exists(path)) throw InputError(path.string() + ": no such file");
    return path;
  }
  auto file = path / (prefer_state ? kStateFile : kModelFile);
  if (!std::filesystem::exists(file)) {
    std::string hint;
    if (!prefer_state && std::filesystem::exists(path / kStateFile)) {
      hint = " (a run whose FFN has no dense form keeps only its training state: pass --unfused)";
    } else if (!list_checkpoints(path / kCheckpointDir).empty()) {
      hint = " (the run did not finish: exfusion train --resume " + path.string() + ")";
    } else if (std::filesystem::exists(path / kConfigFile)) {
      hint = " (the run did not finish, and stopped before its first checkpoint)";
    }
    throw InputError(path.string() + ": no " + file.filename().string() + " in this run directory" +
                     hint);
  }
  return file;
}

nlohmann::json upgrade_stored_config(nlohmann::json config, int64_t format) {
  if (format >= 2 || !config.is_object() || !config.contains("ffn") || !config["ffn"].is_object() ||
      !config["ffn"].contains("kind") || !config["ffn"]["kind"].is_string()) {
    return config;
  }
  auto& ffn = config["ffn"];
  const auto kind = ffn["kind"].get<std::string>();
  if (!ffn_kinds().contains(kind)) return config;  // the reader names the unknown kind
  const auto keys = ffn_kinds().at(kind, {}).defaults->keys();
  auto kept = nlohmann::json::object();
  for (const auto& [key, value] : ffn.items()) {
    if (key == "kind" || key == "layers" ||
        std::find(keys.begin(), keys.end(), key) != keys.end()) {
      kept[key] = value;
    }
  }
  ffn = kept;
  return config;
}

namespace {

// A checkpoint's metadata config says which model to build, and building allocates and
// initialises every parameter: from a small file with a huge config, that is minutes and
// gigabytes before the first shape mismatch. The model holds its parameters outside the FFNs
// (embeddings, attention, head), and every FFN site at least its dense FFN's parameters, each
// value of at least 2 bytes: a file holding fewer bytes cannot be that model. Up to 64 MiB more
// than the file holds is built anyway, for the mismatch's message that names the first wrong
// tensor.
void check_checkpoint_holds_model(const Checkpoint& checkpoint, const std::filesystem::path& path) {
  const auto& options = *checkpoint.config.model.options;
  const auto sites = options.ffn_sites();
  const double needed = 2.0 * dense_model_parameters(options);
  const std::string prefix = checkpoint.is_training_state ? "model." : "";
  double held = 0;
  for (const auto& [name, tensor] : checkpoint.file.tensors) {
    if (name.rfind(prefix, 0) == 0) held += static_cast<double>(tensor.nbytes());
  }
  constexpr double kBuiltAnyway = 64.0 * 1024 * 1024;
  if (needed > held + kBuiltAnyway) {
    std::ostringstream message;
    message << path.string() << ": its config describes a model of " << sites.size()
            << " blocks with FFNs";
    if (!sites.empty()) {
      message << " (the first of width " << sites.front().dim << " and hidden size "
              << sites.front().hidden << ")";
    }
    message << " and " << std::setprecision(15) << options.parameters_outside_ffns()
            << " parameters outside them (at least " << needed
            << " bytes of weights), but the file holds " << held
            << " bytes of model tensors: the config does not belong to these tensors";
    throw InputError(message.str());
  }
}

}  // namespace

Checkpoint load_checkpoint(const std::filesystem::path& path, const std::string& config_override) {
  Checkpoint checkpoint;
  checkpoint.file = load_safetensors(path);
  const auto& metadata = checkpoint.file.metadata;
  const auto kind = metadata.find(kKindMetadataKey);
  checkpoint.is_training_state = kind != metadata.end() && (kind->second == kTrainingStateKind ||
                                                            kind->second == kUpcycledKind);
  // A DeRS-compressed file reads as the training state's model it came from: W_b + Δ̂_i.
  if (kind != metadata.end() && kind->second == kDersCompressedKind) {
    checkpoint.file.tensors = synthesise_ders_tensors(checkpoint.file, path);
    checkpoint.is_training_state = true;
  }
  const auto format = metadata.find(kFormatMetadataKey);
  if (format != metadata.end()) {
    const auto& text = format->second;
    const bool known =
        text.size() == 1 && text[0] >= '1' && text[0] - '0' <= kNewestCheckpointFormat;
    if (!known) {
      throw InputError(path.string() + ": checkpoint format " + text +
                       ", this build reads formats 1 to " +
                       std::to_string(kNewestCheckpointFormat));
    }
    checkpoint.format = text[0] - '0';
  }
  // The checkpoint's own config, with --config laid over it when given: a different
  // architecture then fails against the tensors, and the normalisation is kept.
  auto config = default_run_config();
  const std::string source = path.string() + " (metadata " + kConfigMetadataKey + ")";
  const auto entry = metadata.find(kConfigMetadataKey);
  if (entry != metadata.end()) {
    const auto stored = parse_json_input(entry->second, source);
    apply_config(config, upgrade_stored_config(stored, checkpoint.format), source);
  } else if (config_override.empty()) {
    throw InputError(path.string() + ": no '" + std::string(kConfigMetadataKey) +
                     "' metadata; pass --config with the model's config");
  }
  if (!config_override.empty()) config = build_run_config(config, {config_override, {}});
  checkpoint.config = std::move(config);
  return checkpoint;
}

ModelPtr model_from_checkpoint(const Checkpoint& checkpoint, const std::filesystem::path& path) {
  check_checkpoint_holds_model(checkpoint, path);
  auto model = build_model(checkpoint.config.model, checkpoint.config.ffn);
  load_module_tensors(*model, checkpoint.file, path, checkpoint.is_training_state ? "model." : "");
  return model;
}

}  // namespace exfusion
