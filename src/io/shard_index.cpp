// Hugging Face's shard index, parsed torch-free (see shard_index.h).
#include "exfusion/io/shard_index.h"

#include <filesystem>

#include "exfusion/util/error.h"
#include "exfusion/util/json_input.h"

namespace exfusion {

std::map<std::string, std::set<std::string>> parse_shard_index(std::string_view text,
                                                               const std::string& where) {
  const auto json = parse_json_input(text, where);
  if (!json.is_object() || !json.contains("weight_map") || !json["weight_map"].is_object() ||
      json["weight_map"].empty()) {
    throw InputError(where +
                     ": weight_map: expected an object mapping each tensor to its shard "
                     "file");
  }
  std::map<std::string, std::set<std::string>> shards;
  for (const auto& [tensor, shard] : json["weight_map"].items()) {
    if (!shard.is_string()) {
      throw InputError(where + ": weight_map." + brief_text(tensor) +
                       ": expected the name of a shard file, got " + brief_json(shard));
    }
    const auto name = shard.get<std::string>();
    const std::filesystem::path path = name;
    if (name.empty() || name.find('/') != std::string::npos || name == "." || name == ".." ||
        path.has_parent_path()) {
      throw InputError(where + ": weight_map." + brief_text(tensor) + ": \"" + brief_text(name) +
                       "\": expected a file name beside the index");
    }
    shards[name].insert(tensor);
  }
  return shards;
}

}  // namespace exfusion
