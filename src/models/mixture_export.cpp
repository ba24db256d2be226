// The registry of mixture export formats (see mixture_export.h).
#include "exfusion/models/mixture_export.h"

#include <algorithm>

#include "exfusion/config/fields.h"
#include "exfusion/util/error.h"

namespace exfusion {

void MixtureExportRegistry::add(const std::string& name, const std::string& model_kind,
                                const std::string& help,
                                std::shared_ptr<const MixtureExportFormat> format) {
  entries_.push_back({name, model_kind, help, std::move(format)});
}

const MixtureExportRegistry::Entry& MixtureExportRegistry::find(
    const std::string& model_kind) const {
  const auto entry = std::find_if(entries_.begin(), entries_.end(),
                                  [&](const Entry& e) { return e.model_kind == model_kind; });
  if (entry != entries_.end()) return *entry;
  std::vector<std::string> kinds;
  for (const auto& e : entries_) kinds.push_back(e.model_kind + " (" + e.name + ")");
  throw InputError("model.kind = " + model_kind +
                   ": no export for a mixture of experts of this kind; there is one for " +
                   config::join_or(kinds));
}

}  // namespace exfusion
