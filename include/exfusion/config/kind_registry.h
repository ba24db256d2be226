// The registry behind every "kind" a config names (FFN kinds, model kinds): name → help and
// the kind's default options, in registration order; an unknown name is an error listing the
// registered ones. FfnRegistry and ModelRegistry add their typed `add<Options>`.
#pragma once
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "exfusion/config/fields.h"

namespace exfusion::config {

template <class Options>
class KindRegistry {
 public:
  struct Entry {
    std::string name;
    std::string help;
    std::shared_ptr<const Options> defaults;
  };

  // A second kind of the same name replaces the first.
  void add_entry(Entry entry) {
    if (entries_.count(entry.name) == 0) order_.push_back(entry.name);
    entries_[entry.name] = std::move(entry);
  }
  // Throws InputError "<source>: <path>.kind = "x": expected a, b or c".
  const Entry& at(const std::string& name, const Location& where) const {
    const auto found = entries_.find(name);
    if (found == entries_.end()) fail(where, "kind", name, join_or(order_));
    return found->second;
  }
  bool contains(const std::string& name) const { return entries_.count(name) > 0; }
  const std::vector<std::string>& names() const { return order_; }

 private:
  std::map<std::string, Entry> entries_;
  std::vector<std::string> order_;
};

}  // namespace exfusion::config
