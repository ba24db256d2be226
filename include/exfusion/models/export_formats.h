// How a dense model leaves the tool: each model kind registers the formats it is exported in
// (the ViT: timm's names with a model.json of timm's kwargs; an encoder-decoder or a decoder LM:
// a Hugging Face directory with its config.json) with one line in models/registry.cpp. Training
// writes the kind's first format, `fuse --format` and `import --format` any of them; every kind
// also has "exfusion": the weights under our names with a model.json of the run's config.
#pragma once
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "exfusion/models/model.h"

namespace exfusion {

// What a format writes from. (clang-tidy 14 flags the implicit members of a struct holding
// nlohmann::json; nothing here is declared noexcept.)
// NOLINTNEXTLINE(bugprone-exception-escape)
struct ExportContext {
  const ModelConfig& model;
  nlohmann::json run_config;             // the dense model's run config, as its metadata holds it
  nlohmann::json evaluation_entries;     // what evaluation needs of the data (mean, std, ...)
  std::vector<std::string> class_names;  // label i's name, where the data names its classes
  std::string weights_file;              // the weights' file name: "model.safetensors"
};

// A text file a format writes beside the weights: its name in the weights' directory.
struct DescriptionFile {
  std::string name;
  std::string text;
};

class ExportFormat {
 public:
  virtual ~ExportFormat() = default;
  // The files beside the weights that make them loadable by the format's readers. The weights
  // are written under our names, which a model kind chooses to be its format's (timm's, Hugging
  // Face's), so that the one file is both the export and what `eval` and `import` read back.
  virtual std::vector<DescriptionFile> description_files(const ExportContext& context) const = 0;
  // "" : the descriptions go beside the weights. Else a subdirectory of the weights' directory
  // that holds the whole export, the weights linked into it (copied where a link cannot be
  // made): a Hugging Face directory's config.json would clash with a run's own.
  virtual std::string directory() const { return {}; }
};

// Our own description, every kind's "exfusion" format and the base of the others': model.json
// (`<weights stem>.json`) with the weights' file name, the evaluation entries, the class names
// and the run's config under "exfusion".
nlohmann::json exfusion_model_description(const ExportContext& context);

class ExportFormatRegistry {
 public:
  struct Entry {
    std::string name;
    std::string model_kind;
    std::string help;
    std::shared_ptr<const ExportFormat> format;
  };
  // A second format of the same name for the same kind replaces the first.
  void add(const std::string& name, const std::string& model_kind, const std::string& help,
           std::shared_ptr<const ExportFormat> format);
  // `name` for `model_kind` ("" : the kind's first, else "exfusion"); InputError naming the
  // kind's formats where it has none of that name.
  Entry find(const std::string& model_kind, const std::string& name) const;
  // The formats `model_kind` exports in, its default first, "exfusion" last.
  std::vector<std::string> names(const std::string& model_kind) const;

 private:
  std::vector<Entry> entries_;
};
ExportFormatRegistry& export_formats();  // the built-in ones: models/registry.cpp

}  // namespace exfusion
