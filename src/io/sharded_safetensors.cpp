// Sharded safetensors checkpoints read as one file (see sharded_safetensors.h).
#include "exfusion/io/sharded_safetensors.h"

#include <fstream>
#include <iterator>
#include <map>
#include <set>

#include "exfusion/util/error.h"
#include "exfusion/util/json_input.h"

namespace exfusion {
namespace fs = std::filesystem;

bool is_shard_index(const fs::path& path) {
  const std::string suffix = ".safetensors.index.json";
  const auto name = path.filename().string();
  return name.size() > suffix.size() &&
         name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
}

SafetensorsFile load_sharded_safetensors(const fs::path& index) {
  std::ifstream in(index, std::ios::binary);
  if (!in) throw InputError(index.string() + ": cannot be read");
  const auto json =
      parse_json_input(std::string(std::istreambuf_iterator<char>(in), {}), index.string());
  if (!json.is_object() || !json.contains("weight_map") || !json["weight_map"].is_object() ||
      json["weight_map"].empty()) {
    throw InputError(index.string() +
                     ": weight_map: expected an object mapping each tensor to its shard file");
  }
  // The shards in the index's order of first mention, and the tensors each should hold.
  std::map<std::string, std::set<std::string>> shard_tensors;
  for (const auto& [tensor, shard] : json["weight_map"].items()) {
    if (!shard.is_string()) {
      throw InputError(index.string() + ": weight_map." + tensor +
                       ": expected the name of a shard file, got " + brief_json(shard));
    }
    const fs::path name = shard.get<std::string>();
    if (name.empty() || name.has_parent_path() || name == "." || name == "..") {
      throw InputError(index.string() + ": weight_map." + tensor + ": \"" + name.string() +
                       "\": expected a file name beside the index");
    }
    shard_tensors[name.string()].insert(tensor);
  }
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
