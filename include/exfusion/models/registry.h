// The registries of what a config may name: FFN kinds and model kinds. The built-in ones are
// registered by one explicit line each in src/models/registry.cpp; a program (or a test) adds
// its own with ffn_kinds().add<Options>(...) before it reads a config.
#pragma once
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "exfusion/config/kind_registry.h"
#include "exfusion/layers/ffn_kind.h"
#include "exfusion/models/model.h"

namespace exfusion {

class ModelRegistry : public config::KindRegistry<ModelOptions> {
 public:
  template <class Options>
  void add(const std::string& name, const std::string& help, Options defaults = {}) {
    add_entry({name, help, std::make_shared<DeclaredModelOptions<Options>>(std::move(defaults))});
  }
};

FfnRegistry& ffn_kinds();
ModelRegistry& model_kinds();

}  // namespace exfusion
