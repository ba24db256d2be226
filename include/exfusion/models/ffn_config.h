// The `ffn` section of a run: which FFN kind the model's blocks get, in which blocks, and that
// kind's options, e.g. {kind: moe, layers: [], num_experts: 4, top_k: 2, ...}. It carries only
// its kind's keys: a key of another kind is an error naming it and the kind it belongs to.
#pragma once
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "exfusion/config/fields.h"
#include "exfusion/layers/ffn_kind.h"

namespace exfusion {

struct FfnConfig {
  FfnConfig();  // kind "dense"
  // A config of a registered kind with typed options (tests, bench, programmatic use).
  template <class Options>
  static FfnConfig of(const std::string& kind, Options options, std::vector<int64_t> layers = {}) {
    FfnConfig config;
    config.kind = kind;
    config.options = std::make_shared<DeclaredFfnOptions<Options>>(std::move(options));
    config.layers = std::move(layers);
    return config;
  }

  // The kind's options if they are of type `Options`, else null.
  template <class Options>
  const Options* as() const {
    const auto* declared = dynamic_cast<const DeclaredFfnOptions<Options>*>(options.get());
    return declared ? &declared->options : nullptr;
  }

  // Whether block `block` gets this kind rather than the dense FFN.
  bool replaces(int64_t block) const;
  bool is_dense() const { return kind == "dense"; }
  // The FFN at `site`: this kind where it replaces the dense FFN (site.index is in `layers`),
  // else the dense one, in the site's form.
  std::shared_ptr<FeedForwardImpl> build(const FfnSite& site) const;
  // Multiply-adds per token of the FFN at `site`.
  double forward_macs_per_token(const FfnSite& site) const;
  // "dense", "exfusion-mb-n4", "moe-n4-k2".
  std::string run_name() const { return options->run_name(); }
  // Checks `layers` against a model whose sites are indexed 0 .. sites-1; errors name `at`'s path.
  void validate_layers(int64_t sites, const config::Location& at) const;

  // The config-section interface (config/fields.h): a patch naming another kind starts from
  // that kind's defaults.
  void apply(const nlohmann::json& patch, const config::Location& at);
  nlohmann::json to_json() const;
  void describe(std::vector<config::FieldHelp>& out, const std::string& prefix) const;

  std::string kind;
  std::vector<int64_t> layers;  // FFN sites (FfnSite::index) replaced; empty means all
  std::shared_ptr<const FfnOptions> options;
};

}  // namespace exfusion
