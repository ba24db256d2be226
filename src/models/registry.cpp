// The built-in FFN kinds and models, one line each (see registry.h).
#include "exfusion/models/registry.h"

#include "exfusion/fusion/exfusion_ffn.h"
#include "exfusion/fusion/moe.h"
#include "exfusion/layers/mlp.h"
#include "exfusion/models/vit.h"
#include "exfusion/util/error.h"

namespace exfusion {

FfnRegistry& ffn_kinds() {
  static FfnRegistry registry = [] {
    FfnRegistry kinds;
    kinds.add<DenseFfnOptions>("dense", "the plain FFN, fc2(GELU(fc1 x))");
    kinds.add<ExFusionOptions>("exfusion", "N experts per set, fused by fusion weights");
    kinds.add<MoeOptions>("moe", "top-k mixture of experts with capacity (MoE-N-k)");
    return kinds;
  }();
  return registry;
}

ModelRegistry& model_kinds() {
  static ModelRegistry registry = [] {
    ModelRegistry models;
    models.add<VisionTransformerOptions>("vit", "Vision Transformer / DeiT with timm's names");
    return models;
  }();
  return registry;
}

void ModelRegistry::add_entry(Entry entry) {
  if (entries_.count(entry.name) == 0) order_.push_back(entry.name);
  entries_[entry.name] = std::move(entry);
}

const ModelRegistry::Entry& ModelRegistry::at(const std::string& name,
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

}  // namespace exfusion
