// The export-format registry and our own format, every model kind's (see export_formats.h).
#include "exfusion/models/export_formats.h"

#include <algorithm>
#include <filesystem>

#include "exfusion/config/fields.h"
#include "exfusion/util/error.h"

namespace exfusion {

namespace {

std::string description_name(const std::string& weights_file) {
  return std::filesystem::path(weights_file).replace_extension(".json").string();
}

class ExfusionFormat : public ExportFormat {
 public:
  std::vector<DescriptionFile> description_files(const ExportContext& context) const override {
    return {{description_name(context.weights_file),
             exfusion_model_description(context).dump(2) + "\n"}};
  }
};

}  // namespace

nlohmann::json exfusion_model_description(const ExportContext& context) {
  nlohmann::json description = {{"weights", context.weights_file}};
  for (const auto& [key, value] : context.evaluation_entries.items()) description[key] = value;
  if (!context.class_names.empty()) description["classes"] = context.class_names;
  description["exfusion"] = context.run_config;
  return description;
}

void ExportFormatRegistry::add(const std::string& name, const std::string& model_kind,
                               const std::string& help,
                               std::shared_ptr<const ExportFormat> format) {
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

ExportFormatRegistry::Entry ExportFormatRegistry::find(const std::string& model_kind,
                                                       const std::string& name) const {
  for (const auto& entry : entries_) {
    if (entry.model_kind == model_kind && (name.empty() || entry.name == name)) return entry;
  }
  if (name.empty() || name == kOurFormat) {
    return {kOurFormat, model_kind, "our names, with a model.json of the run's config",
            std::make_shared<ExfusionFormat>()};
  }
  throw InputError("--format " + name + ": a model of kind " + model_kind + " is exported as " +
                   config::join_or(names(model_kind)));
}

std::vector<std::string> ExportFormatRegistry::names(const std::string& model_kind) const {
  std::vector<std::string> names;
  for (const auto& entry : entries_) {
    if (entry.model_kind == model_kind) names.push_back(entry.name);
  }
  names.emplace_back(kOurFormat);
  return names;
}

}  // namespace exfusion
