// Sharded safetensors checkpoints read as one file (see sharded_safetensors.h).
#include "exfusion/io/sharded_safetensors.h"

#include "exfusion/io/shard_index.h"
#include "exfusion/util/error.h"
#include "exfusion/util/file_bytes.h"

namespace exfusion {
namespace fs = std::filesystem;

bool is_shard_index(const fs::path& path) {
  const std::string suffix = ".safetensors.index.json";
  const auto name = path.filename().string();
  return name.size() > suffix.size() &&
         name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
}

SafetensorsFile load_sharded_safetensors(const fs::path& index) {
  const auto shard_tensors = parse_shard_index(
      read_file_bytes(index, "a shard index (model.safetensors.index.json)"), index.string());
  SafetensorsFile merged;
  const auto directory = index.parent_path();
  for (const auto& [shard, expected] : shard_tensors) {
    const auto path = directory / shard;
    if (!fs::is_regular_file(path)) {
      throw InputError(index.string() + ": names the shard " + shard + " (for " +
                       std::to_string(expected.size()) + " tensors, " + *expected.begin() +
                       " among them), which is not in " + directory.string());
    }
    auto file = load_safetensors(path);
    for (const auto& tensor : expected) {
      if (file.tensors.count(tensor) == 0) {
        throw InputError(index.string() + ": maps " + tensor + " to " + shard +
                         ", which does not hold it");
      }
    }
    for (auto& [name, tensor] : file.tensors) {
      if (expected.count(name) == 0) {
        throw InputError(path.string() + ": holds " + name + ", which the index " +
                         index.filename().string() + " does not map to this shard");
      }
      merged.tensors.emplace(name, std::move(tensor));
    }
    merged.metadata.insert(file.metadata.begin(), file.metadata.end());
  }
  return merged;
}

}  // namespace exfusion
