// Walking a module tree for its capabilities (see capabilities.h).
#include "exfusion/layers/capabilities.h"

namespace exfusion {

std::set<std::string> parameters_exempt_from_weight_decay(const torch::nn::Module& root) {
  std::set<std::string> exempt;
  for_each_capable<ExemptFromWeightDecay>(
      root, [&](const std::string& path, const ExemptFromWeightDecay& module) {
        for (const auto& name : module.exempt_from_weight_decay()) {
          exempt.insert(path.empty() ? name : path + "." + name);
        }
      });
  return exempt;
}

nlohmann::json collect_metrics(const torch::nn::Module& root) {
  auto out = nlohmann::json::object();
  for_each_capable<ReportsMetrics>(root, [&](const std::string& path, const ReportsMetrics& m) {
    const auto dot = path.rfind('.');
    const auto owner = dot == std::string::npos ? std::string() : path.substr(0, dot);
    const auto metrics = m.metrics();
    for (const auto& [group, value] : metrics.items()) out[group][owner] = value;
  });
  return out;
}

}  // namespace exfusion
