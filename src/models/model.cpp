// Model configs, building a model and fusing it (see model.h).
#include "exfusion/models/model.h"

#include <algorithm>

#include "exfusion/fusion/fuse.h"
#include "exfusion/io/module_tensors.h"
#include "exfusion/models/registry.h"
#include "exfusion/util/error.h"

namespace exfusion {

double values_outside_ffns(const TensorShapes& shapes, const std::vector<FfnSite>& sites) {
  double total = 0;
  for (const auto& [name, shape] : shapes) {
    const bool in_ffn = std::any_of(sites.begin(), sites.end(), [&](const FfnSite& site) {
      return name.rfind(site.path + ".", 0) == 0;
    });
    if (in_ffn) continue;
    double values = 1;
    for (const auto size : shape) values *= static_cast<double>(size);
    total += values;
  }
  return total;
}

int64_t count_parameters(const torch::nn::Module& module) {
  int64_t total = 0;
  for (const auto& p : module.parameters()) total += p.numel();
  return total;
}

int64_t count_stored_values(const torch::nn::Module& module) {
  int64_t total = count_parameters(module);
  for (const auto& b : module.buffers()) total += b.numel();
  return total;
}

ModelConfig::ModelConfig() : kind("vit"), options(model_kinds().at("vit", {}).defaults) {}

void ModelConfig::apply(const nlohmann::json& patch, const config::Location& at) {
  if (!patch.is_object()) config::fail(at, at.path + ": expected an object");
  auto updated = options->clone();
  if (patch.contains("kind")) {
    const auto& value = patch.at("kind");
    if (!value.is_string()) config::fail(at, "kind", value, "a string naming a model kind");
    const auto name = value.get<std::string>();
    const auto& entry = model_kinds().at(name, at);
    if (name != kind) updated = entry.defaults->clone();
    kind = name;
  }
  updated->apply(patch, at, {"kind"});
  updated->validate(at);
  options = std::move(updated);
}

nlohmann::json ModelConfig::to_json() const {
  auto out = options->to_json();
  out["kind"] = kind;
  return out;
}

void ModelConfig::describe(std::vector<config::FieldHelp>& out, const std::string& prefix) const {
  out.push_back({prefix + ".kind", "string", kind,
                 "model kind: " + config::join_or(model_kinds().names()), ""});
  for (auto& field : options->describe(prefix)) out.push_back(std::move(field));
}

ModelPtr build_model(const ModelConfig& model, const FfnConfig& ffn) {
  return model.options->build(ffn);
}

ModelPtr fuse_model(const ModelConfig& model, const ModelImpl& trained) {
  const auto tensors = fused_tensors(trained);
  auto dense = build_model(model, FfnConfig{});
  const auto reference = trained.parameters().front();
  dense->to(reference.device(), reference.scalar_type());
  SafetensorsFile file;
  for (const auto& [name, tensor] : tensors) file.tensors.emplace(name, tensor);
  load_module_tensors(*dense, file, "the fused model");
  dense->train(trained.is_training());
  return dense;
}

}  // namespace exfusion
