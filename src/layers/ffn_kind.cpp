// The FFN kind registry (see ffn_kind.h).
#include "exfusion/layers/ffn_kind.h"

#include "exfusion/util/error.h"

namespace exfusion {

void FfnRegistry::add_entry(Entry entry) {
  if (entries_.count(entry.name) == 0) order_.push_back(entry.name);
  entries_[entry.name] = std::move(entry);
}

const FfnRegistry::Entry& FfnRegistry::at(const std::string& name,
                                          const config::Location& where) const {
  const auto found = entries_.find(name);
  if (found == entries_.end()) {
    std::string expected;
    for (size_t i = 0; i < order_.size(); ++i) {
      expected += (i == 0 ? "" : i + 1 == order_.size() ? " or " : ", ") + order_[i];
    }
    config::fail(where, "kind", name, expected);
  }
  return found->second;
}

std::vector<std::string> FfnRegistry::names() const { return order_; }

}  // namespace exfusion
