// Fuzz target: a shard index (model.safetensors.index.json) through parse_shard_index. Any input
// may be rejected with InputError; nothing may crash, and what it accepts names only plain files
// beside the index, each with at least one tensor.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "exfusion/io/shard_index.h"
#include "exfusion/util/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const auto shards = exfusion::parse_shard_index(
        std::string_view(reinterpret_cast<const char*>(data), size), "fuzz.index.json");
    if (shards.empty()) std::abort();
    for (const auto& [name, tensors] : shards) {
      if (name.empty() || name.find('/') != std::string::npos || name == "." || name == ".." ||
          tensors.empty()) {
        std::abort();
      }
    }
  } catch (const exfusion::InputError&) {
  }
  return 0;
}
