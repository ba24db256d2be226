// Dense checkpoints from outside read as one of our models. Every model kind registers the
// formats its weights come in (the ViT: timm's state_dict and Hugging Face's
// ViTForImageClassification, models/vit_formats.h) with one line in models/registry.cpp; our
// own checkpoints are read for any kind from the config they carry. `exfusion import`,
// `upcycle` and `init.from` read through import_dense_model and name no format or model.
#pragma once
#include <filesystem>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "exfusion/io/safetensors.h"
#include "exfusion/models/model.h"

namespace exfusion {

// What a format reads from a file for its architecture. (clang-tidy 14 flags the implicit
// members of a struct holding nlohmann::json; nothing here is declared noexcept.)
// NOLINTNEXTLINE(bugprone-exception-escape)
struct ForeignArchitecture {
  nlohmann::json model;      // the model section it describes (kind included)
  std::string read_from;     // "x.safetensors (the shapes of its tensors)", for errors
  std::string described_by;  // "its tensors' shapes describe", for the mismatch message
};

// One outside format of one model kind: the tensor its files are recognised by, where their
// architecture comes from, and the file's tensors each of ours is made of.
class ImportFormat {
 public:
  virtual ~ImportFormat() = default;
  // A tensor name only this format's files hold: `--from auto` picks the format whose
  // signature the file has.
  virtual std::string signature() const = 0;
  // The architecture `file` (at `path`) describes; `model_patch` (--set model.*) may give what
  // the file lacks. InputError naming the file where it cannot.
  virtual ForeignArchitecture architecture(const SafetensorsFile& file,
                                           const std::filesystem::path& path,
                                           const nlohmann::json& model_patch) const = 0;
  // The file's tensors that make our tensor `ours`: one, or several stacked along dim 0 (each
  // an equal share of its rows).
  virtual std::vector<std::string> names_in_file(const std::string& ours) const = 0;
  // Tensors the format's files may hold that none of ours is made of (the copies of a tied
  // embedding some writers save): left out instead of refused as unexpected.
  virtual bool ignored(const std::string& /*name*/) const { return false; }
  // The file's tensor that stands for `name` where the file leaves `name` out because the two
  // are tied (transformers 5 saves T5's lm_head only as `shared`); "" for none.
  virtual std::string tied_to(const std::string& /*name*/) const { return {}; }
  // What the file's directory says of the run beyond the model, as a run-config patch that
  // `exfusion import` lays under the --set ones (a Llama directory: the causal_lm task and its
  // tokenizer.model as data.tokenizer); {} for nothing.
  virtual nlohmann::json run_defaults(const std::filesystem::path& /*file*/) const {
    return nlohmann::json::object();
  }
};

// The formats a model kind reads, by name ("timm", "huggingface"); "exfusion" (ours) and "auto"
// are every kind's and not registered.
class ImportFormatRegistry {
 public:
  struct Entry {
    std::string name;
    std::string model_kind;
    std::string help;
    std::shared_ptr<const ImportFormat> format;
  };
  // A second format of the same name for the same kind replaces the first; kinds share names
  // ("timm" reads a ViT, a Swin or a PVT: its signature tells which).
  void add(const std::string& name, const std::string& model_kind, const std::string& help,
           std::shared_ptr<const ImportFormat> format);
  const std::vector<Entry>& entries() const { return entries_; }
  // The formats named `name` (of every kind).
  std::vector<const Entry*> named(const std::string& name) const;
  // "auto, exfusion, timm or huggingface": what --from takes.
  std::vector<std::string> names() const;

 private:
  std::vector<Entry> entries_;
};
ImportFormatRegistry& import_formats();  // the built-in ones: models/registry.cpp

struct ImportedModel {
  std::string format;          // "exfusion" or a registered format's name, never "auto"
  std::filesystem::path file;  // the safetensors file read
  ModelConfig model;           // the architecture read
  NamedTensors tensors;        // our names in the model's order, float32
  // The run config in the metadata of one of our checkpoints (its data normalisation, its
  // train section); null for other formats, which hold none.
  nlohmann::json stored_config;
  // The format's run_defaults for the file ({} for ours and most formats).
  nlohmann::json run_defaults = nlohmann::json::object();
};

// Reads `source`: a .safetensors file, a shard index (model.safetensors.index.json: the shards
// it names, as one file), or a directory holding model.safetensors (else state.safetensors,
// else a shard index), in format `from` ("auto": ours when the file's metadata holds our config,
// else the registered format that recognises it):
//  - ours: a dense export, or a training state of a run with ffn.kind dense; the architecture
//    from the config in its metadata;
//  - a registered format: the architecture as that format states it.
// `model_patch` (model-section keys, as `--set model.key=value` gives them) is laid over what
// was read. Floating-point tensors are converted to float32. Throws InputError naming the file,
// the tensor and both shapes for each missing, unexpected or wrongly shaped tensor.
ImportedModel import_dense_model(const std::filesystem::path& source,
                                 const nlohmann::json& model_patch = nlohmann::json::object(),
                                 const std::string& from = "auto");

}  // namespace exfusion
