// The human-readable page of `exfusion info` (see checkpoint_table.h).
#include "exfusion/workflows/checkpoint_table.h"

#include <algorithm>
#include <iomanip>
#include <sstream>
#include <vector>

namespace exfusion {
namespace {

// 1234567 -> "1,234,567".
std::string grouped(int64_t value) {
  auto digits = std::to_string(value < 0 ? -value : value);
  for (auto at = static_cast<int64_t>(digits.size()) - 3; at > 0; at -= 3) {
    digits.insert(static_cast<size_t>(at), ",");
  }
  return (value < 0 ? "-" : "") + digits;
}

std::string number(const nlohmann::json& value, int precision = 4) {
  std::ostringstream out;
  if (value.is_number_integer()) {
    out << value.get<int64_t>();
  } else if (value.is_number()) {
    out << std::setprecision(precision) << value.get<double>();
  } else if (value.is_boolean()) {
    out << (value.get<bool>() ? "true" : "false");
  } else if (value.is_string()) {
    out << value.get<std::string>();
  } else if (value.is_array() && value.empty()) {
    out << "[]";
  } else if (value.is_array()) {
    for (size_t i = 0; i < value.size(); ++i) out << (i ? " " : "") << number(value[i], precision);
  } else {
    out << value.dump();
  }
  return out.str();
}

// "kind: key value, key value" of a section's entries (keys in JSON order, sorted).
std::string section_text(const nlohmann::json& section) {
  std::string text = section.contains("kind") ? number(section["kind"]) + ":" : "";
  for (const auto& [key, value] : section.items()) {
    if (key == "kind") continue;
    text += (text.empty() || text.back() == ':' ? " " : ", ") + key + " " + number(value);
  }
  return text;
}

// What the model's layers report for the FFN at `path` ("blocks.0.mlp" is reported by its
// owner "blocks.0"), as "group.name values; ...".
std::string reported_for(const nlohmann::json& info, const std::string& path) {
  const auto dot = path.rfind('.');
  const auto owner = dot == std::string::npos ? std::string() : path.substr(0, dot);
  std::string text;
  for (const auto* group : {"fusion_weights", "routing", "expert_spread"}) {
    if (!info.contains(group) || !info[group].contains(owner)) continue;
    for (const auto& [name, value] : info[group][owner].items()) {
      text += (text.empty() ? "" : "; ") + name + " " + number(value, 3);
    }
  }
  return text;
}

}  // namespace

std::string format_checkpoint_description(const nlohmann::json& info) {
  std::ostringstream out;
  const auto line = [&](const std::string& label, const std::string& text) {
    out << std::left << std::setw(12) << label << text << "\n";
  };
  std::string what = number(info.value("kind", nlohmann::json("?")));
  if (info.contains("format")) what += ", format " + number(info["format"]);
  if (info.contains("step")) what += ", step " + number(info["step"]);
  line("checkpoint", number(info.value("checkpoint", nlohmann::json(""))) + " (" + what + ")");
  const auto& architecture = info.value("architecture", nlohmann::json::object());
  if (architecture.contains("model")) line("model", section_text(architecture["model"]));
  if (architecture.contains("ffn")) line("ffn", section_text(architecture["ffn"]));
  std::string parameters = grouped(info.value("params", int64_t{0})) + " trained";
  if (info.contains("params_deployed")) {
    parameters +=
        ", " + grouped(static_cast<int64_t>(info["params_deployed"].get<double>())) + " deployed";
  }
  if (info.contains("params_stored")) {
    parameters += ", " + grouped(info["params_stored"].get<int64_t>()) + " values stored";
  }
  line("parameters", parameters);
  if (info.contains("forward_gflops_per_sample")) {
    auto forward = number(info["forward_gflops_per_sample"]) + " GFLOPs per sample";
    if (info.contains("forward_gflops_per_token")) {
      forward += ", " + number(info["forward_gflops_per_token"]) + " per token";
    }
    line("forward", forward);
  }
  if (info.contains("ffn_sites") && !info["ffn_sites"].empty()) {
    size_t width = 8;
    for (const auto& site : info["ffn_sites"]) {
      width = std::max(width, site.value("path", std::string()).size());
    }
    out << "\n"
        << std::left << std::setw(static_cast<int>(width) + 2) << "FFN" << std::setw(15) << "kind"
        << std::right << std::setw(6) << "dim" << std::setw(8) << "hidden"
        << "  reports\n";
    for (const auto& site : info["ffn_sites"]) {
      const auto path = site.value("path", std::string());
      auto kind = site.value("kind", std::string());
      if (site.value("gated", false)) kind += " (gated)";
      out << std::left << std::setw(static_cast<int>(width) + 2) << path << std::setw(15) << kind
          << std::right << std::setw(6) << site.value("dim", int64_t{0}) << std::setw(8)
          << site.value("hidden", int64_t{0}) << "  " << reported_for(info, path) << "\n";
    }
  }
  return out.str();
}

}  // namespace exfusion
