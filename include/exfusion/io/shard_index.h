// Hugging Face's shard index (model.safetensors.index.json: {"metadata": {...}, "weight_map":
// {tensor: file}}) parsed and checked torch-free, so the part an outside file reaches is fuzzed
// (fuzz/shard_index_fuzzer.cpp); io/sharded_safetensors reads the shards it names.
#pragma once
#include <map>
#include <set>
#include <string>
#include <string_view>

namespace exfusion {

// Each shard file the index names, with the tensors it maps there. InputError naming `where`
// for text that is not such an index: no weight_map object or an empty one, a value that is no
// file name, or one that is not a plain name beside the index ("../x", "a/b", ".", "..").
std::map<std::string, std::set<std::string>> parse_shard_index(std::string_view text,
                                                               const std::string& where);

}  // namespace exfusion
