// How a trained mixture of experts leaves the tool where its model kind has a sparse
// architecture that other readers know (a Llama whose FFNs are top-k mixtures: Hugging Face's
// Mixtral). A mixture has no dense form to fuse into, so `exfusion export` writes the format's
// directory from the training state itself; each kind registers its format with one line in
// models/registry.cpp.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "exfusion/io/safetensors.h"
#include "exfusion/models/export_formats.h"
#include "exfusion/models/ffn_config.h"

namespace exfusion {

class MixtureExportFormat {
 public:
  virtual ~MixtureExportFormat() = default;
  // The directory it is written to, in the run's directory by default ("hf").
  virtual std::string directory() const = 0;
  // Refuses (InputError naming the key) a mixture the format cannot express, in a model of
  // `sites` FFN sites.
  virtual void check(const FfnConfig& ffn, int64_t sites) const = 0;
  // The trained model's tensors (our names) under the format's names and layout.
  virtual NamedTensors tensors(const NamedTensors& ours) const = 0;
  // The files beside the weights (model.safetensors) that make the directory loadable.
  virtual std::vector<DescriptionFile> description_files(const ExportContext& context,
                                                         const FfnConfig& ffn) const = 0;
};

class MixtureExportRegistry {
 public:
  struct Entry {
    std::string name;
    std::string model_kind;
    std::string help;
    std::shared_ptr<const MixtureExportFormat> format;
  };
  void add(const std::string& name, const std::string& model_kind, const std::string& help,
           std::shared_ptr<const MixtureExportFormat> format);
  // The format of `model_kind`; InputError naming the kinds that have one where it has none.
  const Entry& find(const std::string& model_kind) const;

 private:
  std::vector<Entry> entries_;
};
MixtureExportRegistry& mixture_export_formats();  // the built-in ones: models/registry.cpp

}  // namespace exfusion
