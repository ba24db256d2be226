// A checkpoint split over several safetensors files by Hugging Face's save_pretrained (large
// models: model-00001-of-00004.safetensors, ...) with the index that maps each tensor to its
// file (model.safetensors.index.json: {"metadata": {...}, "weight_map": {tensor: file}}), read
// as one file. Every disagreement between the index and the shards is an error naming both.
#pragma once
#include <filesystem>
#include <string>

#include "exfusion/io/safetensors.h"

namespace exfusion {

// Hugging Face's name for the index in a save_pretrained directory.
inline constexpr const char* kShardIndexFile = "model.safetensors.index.json";

// Whether `path` names a shard index (its name ends in ".safetensors.index.json").
bool is_shard_index(const std::filesystem::path& path);

// The tensors of every shard the index at `index` names (files beside it), as one file.
// InputError naming the index for a shard it names that is absent or a name outside its
// directory, a tensor its shard does not hold, a tensor a shard holds that the index does not
// map there, and a tensor in two shards; a shard's own errors as load_safetensors gives them.
SafetensorsFile load_sharded_safetensors(const std::filesystem::path& index);

}  // namespace exfusion
