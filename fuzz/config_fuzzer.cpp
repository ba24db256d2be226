// Fuzz target: a config file's text through the config reader, built twice: as config_json and
// as config_yaml (EXFUSION_FUZZ_YAML). Rejections are InputErrors naming the file; accepted
// text gives a JSON value within the nesting limit.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <string_view>
#include <utility>
#include <vector>

#include "exfusion/config/config_file.h"
#include "exfusion/util/error.h"
#include "exfusion/util/json_input.h"

namespace {

#ifdef EXFUSION_FUZZ_YAML
constexpr auto kFormat = exfusion::config::ConfigFormat::yaml;
constexpr const char* kFileName = "fuzz.yaml";
#else
constexpr auto kFormat = exfusion::config::ConfigFormat::json;
constexpr const char* kFileName = "fuzz.json";
#endif

// Depth of a value, counted without recursion.
size_t depth_of(const nlohmann::json& root) {
  size_t deepest = 0;
  std::vector<std::pair<const nlohmann::json*, size_t>> pending{{&root, 0}};
  while (!pending.empty()) {
    const auto [value, depth] = pending.back();
    pending.pop_back();
    if (!value->is_structured()) continue;
    deepest = std::max(deepest, depth + 1);
    for (const auto& child : *value) pending.push_back({&child, depth + 1});
  }
  return deepest;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const auto value = exfusion::config::parse_config_text(
        std::string_view(reinterpret_cast<const char*>(data), size), kFormat, kFileName);
    if (depth_of(value) > exfusion::kMaxJsonDepth) std::abort();
  } catch (const exfusion::InputError&) {
  }
  return 0;
}
