// The run's ffn section (see ffn_config.h).
#include "exfusion/models/ffn_config.h"

#include <algorithm>

#include "exfusion/layers/mlp.h"
#include "exfusion/models/registry.h"
#include "exfusion/util/error.h"

namespace exfusion {
namespace {

const std::set<std::string> kOwnKeys = {"kind", "layers"};

std::string join(const std::vector<std::string>& names) {
  std::string out;
  for (size_t i = 0; i < names.size(); ++i) out += (i ? ", " : "") + names[i];
  return out;
}

}  // namespace

FfnConfig::FfnConfig() : kind("dense"), options(ffn_kinds().at("dense", {}).defaults) {}

bool FfnConfig::replaces(int64_t block) const {
  return !is_dense() &&
         (layers.empty() || std::find(layers.begin(), layers.end(), block) != layers.end());
}

std::shared_ptr<FeedForwardImpl> FfnConfig::build(const FfnSite& site) const {
  if (replaces(site.index)) return options->build(site);
  return DenseFfnOptions{}.build(site);
}

double FfnConfig::forward_macs_per_token(const FfnSite& site) const {
  if (replaces(site.index)) return options->forward_macs_per_token(site);
  return site.dense_macs_per_token();
}

void FfnConfig::validate_layers(int64_t sites, const config::Location& at) const {
  for (const auto layer : layers) {
    if (layer < 0 || layer >= sites) {
      config::fail(at, "layers", layer, "block indices in [0, " + std::to_string(sites) + ")");
    }
  }
}

void FfnConfig::apply(const nlohmann::json& patch, const config::Location& at) {
  if (!patch.is_object()) config::fail(at, at.path + ": expected an object");
  if (patch.contains("kind")) {
    const auto& value = patch.at("kind");
    if (!value.is_string()) config::fail(at, "kind", value, "a string naming an FFN kind");
    const auto name = value.get<std::string>();
    const auto& entry = ffn_kinds().at(name, at);
    if (name != kind) {
      // Another kind starts from its own defaults: no key of the old kind survives.
      kind = name;
      options = entry.defaults->clone();
    }
  }
  if (patch.contains("layers")) {
    const auto& value = patch.at("layers");
    if (!value.is_array() || !std::all_of(value.begin(), value.end(),
                                          [](const auto& v) { return v.is_number_integer(); })) {
      config::fail(at, "layers", value, "a list of block indices, e.g. [0, 2]");
    }
    layers = value.get<std::vector<int64_t>>();
  }
  const auto own = options->keys();
  for (const auto& [key, value] : patch.items()) {
    if (kOwnKeys.count(key) || std::find(own.begin(), own.end(), key) != own.end()) continue;
    std::vector<std::string> owners;
    for (const auto& name : ffn_kinds().names()) {
      const auto keys = ffn_kinds().at(name, at).defaults->keys();
      if (std::find(keys.begin(), keys.end(), key) != keys.end()) owners.push_back(name);
    }
    const auto where = "'" + at.key_path(key) + "'";
    if (!owners.empty()) {
      config::fail(at, where + " is a key of ffn kind " + join(owners) + ", and " +
                           at.key_path("kind") + " is " + kind +
                           (own.empty() ? " (no keys of its own)"
                                        : " (its keys: kind, layers, " + join(own) + ")"));
    }
    config::fail(at, "unknown key " + where + " (" + at.key_path("kind") + " " + kind +
                         " has: kind, layers" + (own.empty() ? "" : ", " + join(own)) + ")");
  }
  auto updated = options->clone();
  updated->apply(patch, at, kOwnKeys);
  updated->validate(at);
  options = std::move(updated);
}

nlohmann::json FfnConfig::to_json() const {
  auto out = options->to_json();
  out["kind"] = kind;
  out["layers"] = layers;
  return out;
}

void FfnConfig::describe(std::vector<config::FieldHelp>& out, const std::string& prefix) const {
  out.push_back(
      {prefix + ".kind", "string", kind, "FFN kind: " + config::join_or(ffn_kinds().names()), ""});
  out.push_back({prefix + ".layers", "list of integers", nlohmann::json(layers).dump(),
                 "blocks whose FFN is replaced; [] = every block", ""});
  for (const auto& name : ffn_kinds().names()) {
    for (auto field : ffn_kinds().at(name, {}).defaults->describe(prefix)) {
      field.help = "(" + name + ") " + field.help;
      out.push_back(std::move(field));
    }
  }
}

}  // namespace exfusion
