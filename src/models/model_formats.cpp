// Dense checkpoints from outside (see model_formats.h): the format says where the architecture
// comes from and which of its tensors makes each of ours; one check then compares every tensor
// with the shape that architecture gives it (the kind's dense_tensor_shapes), before anything
// is built.
#include "exfusion/models/model_formats.h"

#include <algorithm>
#include <set>
#include <tuple>
#include <utility>

#include "exfusion/io/run_names.h"
#include "exfusion/io/sharded_safetensors.h"
#include "exfusion/util/error.h"
#include "exfusion/util/json_input.h"
#include "exfusion/util/shape_text.h"

namespace exfusion {
namespace fs = std::filesystem;
namespace {

// Our tensors made from the file's: each of `sources`' parts present, floating-point and of its
// share of the rows, concatenated along dim 0; no tensor under `prefix` left unused. Otherwise
// one InputError listing every difference.
struct TensorSource {
  std::string name;
  std::vector<int64_t> shape;
  std::vector<std::string> parts;
};
NamedTensors gather(const SafetensorsFile& file, const fs::path& path,
                    const std::vector<TensorSource>& sources, const std::string& prefix,
                    const std::string& model_kind, const std::string& described_by,
                    const ImportFormat* format) {
  std::vector<std::string> problems;
  std::set<std::string> used;
  NamedTensors tensors;
  for (const auto& source : sources) {
    auto share = source.shape;
    share[0] /= static_cast<int64_t>(source.parts.size());
    std::vector<torch::Tensor> parts;
    for (const auto& part : source.parts) {
      used.insert(part);
      const auto ours = part == source.name ? "" : " (" + source.name + ")";
      auto found = file.tensors.find(part);
      if (found == file.tensors.end() && format != nullptr && !format->tied_to(part).empty()) {
        found = file.tensors.find(format->tied_to(part));
      }
      if (found == file.tensors.end()) {
        problems.push_back(part + ours + ": missing from the file, expected shape " +
                           shape_text(share));
      } else if (found->second.sizes() != at::IntArrayRef(share)) {
        problems.push_back(part + ours + ": shape " + shape_text(found->second.sizes()) +
                           " in file, expected " + shape_text(share));
      } else if (!at::isFloatingType(found->second.scalar_type())) {
        problems.push_back(part + ours + ": dtype " +
                           std::string(c10::toString(found->second.scalar_type())) +
                           " in file, expected a floating-point tensor");
      } else {
        parts.push_back(found->second.to(torch::kFloat32));
      }
    }
    if (parts.size() == source.parts.size()) {
      tensors.emplace_back(source.name, parts.size() == 1 ? parts[0] : torch::cat(parts, 0));
    }
  }
  for (const auto& [name, tensor] : file.tensors) {
    if (name.rfind(prefix, 0) == 0 && used.count(name) == 0 &&
        (format == nullptr || !format->ignored(name))) {
      problems.push_back(name + ": shape " + shape_text(tensor.sizes()) +
                         " in file, unexpected: not a tensor of this " + model_kind);
    }
  }
  if (problems.empty()) return tensors;
  constexpr size_t kShown = 10;
  std::string message = path.string() + ": does not match the " + model_kind + " " + described_by +
                        " (" + std::to_string(problems.size()) + " differences):";
  for (size_t i = 0; i < std::min(problems.size(), kShown); ++i) message += "\n  " + problems[i];
  if (problems.size() > kShown) {
    message += "\n  and " + std::to_string(problems.size() - kShown) + " more";
  }
  throw InputError(message);
}

fs::path model_file(const fs::path& source) {
  if (!fs::is_directory(source)) {
    if (!fs::exists(source)) throw InputError(source.string() + ": no such file or directory");
    return source;
  }
  for (const auto* name : {kModelFile, kStateFile, kShardIndexFile}) {
    if (fs::exists(source / name)) return source / name;
  }
  throw InputError(source.string() + ": no " + kModelFile + ", " + kStateFile + " or " +
                   kShardIndexFile + " (a sharded save_pretrained) in this directory");
}

// The registered format of `candidates` whose signature `file` holds: "auto" (every format) or
// a name several kinds share; null for ours (auto only: our config in the metadata).
const ImportFormatRegistry::Entry* detect_format(
    const std::vector<const ImportFormatRegistry::Entry*>& candidates, bool ours_allowed,
    const SafetensorsFile& file, const fs::path& path) {
  if (ours_allowed && file.metadata.count(kConfigMetadataKey) != 0) return nullptr;
  std::string looked_for =
      ours_allowed ? "no '" + std::string(kConfigMetadataKey) + "' metadata (ours)" : "";
  for (const auto* entry : candidates) {
    if (file.tensors.count(entry->format->signature()) != 0) return entry;
    if (!looked_for.empty()) looked_for += ", ";
    looked_for += "no " + entry->format->signature() + " (" + entry->help + ")";
  }
  throw InputError(path.string() + ": not a dense model this build reads: " + looked_for);
}

// The model section of our checkpoint's stored config, and that config.
std::pair<nlohmann::json, nlohmann::json> our_architecture(const SafetensorsFile& file,
                                                           const fs::path& path) {
  const auto entry = file.metadata.find(kConfigMetadataKey);
  if (entry == file.metadata.end()) {
    std::vector<std::string> others;
    for (const auto& name : import_formats().names()) {
      if (name != "auto" && name != kOurFormat) others.push_back(name);
    }
    throw InputError(path.string() + ": no '" + kConfigMetadataKey +
                     "' metadata: not one of our checkpoints (--from " + config::join_or(others) +
                     " reads theirs)");
  }
  const auto source = path.string() + " (metadata " + kConfigMetadataKey + ")";
  auto stored = parse_json_input(entry->second, source);
  if (!stored.is_object() || !stored.contains("model")) {
    throw InputError(source + ": no model section");
  }
  const auto kind = file.metadata.find(kKindMetadataKey);
  if (kind != file.metadata.end() && kind->second == kTrainingStateKind) {
    nlohmann::json ffn_kind = "?";
    if (stored.contains("ffn") && stored["ffn"].is_object() && stored["ffn"].contains("kind")) {
      ffn_kind = stored["ffn"]["kind"];
    }
    if (ffn_kind != "dense") {
      throw InputError(path.string() + ": a training state of FFN kind " + ffn_kind.dump() +
                       ", not one dense model: `exfusion fuse` writes the dense model it fuses "
                       "into, which import reads");
    }
  }
  auto model = stored["model"];
  return {std::move(model), std::move(stored)};
}

}  // namespace

void ImportFormatRegistry::add(const std::string& name, const std::string& model_kind,
                               const std::string& help,
                               std::shared_ptr<const ImportFormat> format) {
  Entry entry{name, model_kind, help, std::move(format)};
  const auto same = std::find_if(entries_.begin(), entries_.end(), [&](const Entry& existing) {
    return existing.name == name && existing.model_kind == model_kind;
  });
  if (same != entries_.end()) {
    *same = std::move(entry);
  } else {
    entries_.push_back(std::move(entry));
  }
}

std::vector<const ImportFormatRegistry::Entry*> ImportFormatRegistry::named(
    const std::string& name) const {
  std::vector<const Entry*> found;
  for (const auto& entry : entries_) {
    if (entry.name == name) found.push_back(&entry);
  }
  return found;
}

std::vector<std::string> ImportFormatRegistry::names() const {
  std::vector<std::string> names{"auto", kOurFormat};
  for (const auto& entry : entries_) {
    if (std::find(names.begin(), names.end(), entry.name) == names.end()) {
      names.push_back(entry.name);
    }
  }
  return names;
}

ImportedModel import_dense_model(const fs::path& source, const nlohmann::json& model_patch,
                                 const std::string& from) {
  const auto& formats = import_formats();
  std::vector<const ImportFormatRegistry::Entry*> candidates;
  if (from == "auto") {
    for (const auto& entry : formats.entries()) candidates.push_back(&entry);
  } else if (from != kOurFormat) {
    candidates = formats.named(from);
    if (candidates.empty()) {
      throw InputError("--from " + from + ": expected " + config::join_or(formats.names()));
    }
  }
  ImportedModel result;
  result.file = model_file(source);
  const auto file = is_shard_index(result.file) ? load_sharded_safetensors(result.file)
                                                : load_safetensors(result.file);
  const ImportFormatRegistry::Entry* registered = nullptr;
  if (from == "auto" || candidates.size() > 1) {
    registered = detect_format(candidates, from == "auto", file, result.file);
  } else if (!candidates.empty()) {
    registered = candidates.front();
  }
  result.format = registered != nullptr ? registered->name : kOurFormat;

  // The architecture as the format states it (a model section), and where that came from.
  ForeignArchitecture read;
  std::string prefix;
  if (registered == nullptr) {
    std::tie(read.model, result.stored_config) = our_architecture(file, result.file);
    read.read_from = result.file.string() + " (metadata " + kConfigMetadataKey + ")";
    read.described_by = "its metadata's config describes";
    const auto kind = file.metadata.find(kKindMetadataKey);
    if (kind != file.metadata.end() && kind->second == kTrainingStateKind) prefix = "model.";
  } else {
    read = registered->format->architecture(file, result.file, model_patch);
    result.run_defaults = registered->format->run_defaults(result.file);
  }
  result.model.apply(read.model, {read.read_from, "model"});
  if (!model_patch.empty()) {
    result.model.apply(model_patch, {"--set", "model"});
    read.described_by += ", with --set model.* laid over it";
  }
  if (registered != nullptr && result.model.kind != registered->model_kind) {
    throw InputError(read.read_from + ": a model of kind '" + result.model.kind + "'; " +
                     registered->name + " files hold " + registered->model_kind + " models");
  }

  std::vector<TensorSource> sources;
  for (const auto& [name, shape] : result.model.options->dense_tensor_shapes()) {
    sources.push_back({name, shape,
                       registered != nullptr ? registered->format->names_in_file(name)
                                             : std::vector<std::string>{prefix + name}});
  }
  result.tensors = gather(file, result.file, sources, prefix, result.model.kind, read.described_by,
                          registered != nullptr ? registered->format.get() : nullptr);
  return result;
}

}  // namespace exfusion
