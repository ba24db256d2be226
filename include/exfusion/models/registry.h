// The registries of what a config may name: FFN kinds and model kinds. The built-in ones are
// registered by one explicit line each in src/models/registry.cpp; a program (or a test) adds
// its own with ffn_kinds().add<Options>(...) before it reads a config.
#pragma once
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "exfusion/layers/ffn_kind.h"
#include "exfusion/models/model.h"

namespace exfusion {

class ModelRegistry {
 public:
  struct Entry {
    std::string name;
    std::string help;
    std::shared_ptr<const ModelOptions> defaults;
  };
  template <class Options>
  void add(const std::string& name, const std::string& help, Options defaults = {}) {
    add_entry({name, help, std::make_shared<DeclaredModelOptions<Options>>(std::move(defaults))});
  }
  void add_entry(Entry entry);
  const Entry& at(const std::string& name, const config::Location& where) const;
  std::vector<std::string> names() const { return order_; }

 private:
  std::map<std::string, Entry> entries_;
  std::vector<std::string> order_;
};

FfnRegistry& ffn_kinds();
ModelRegistry& model_kinds();

}  // namespace exfusion
