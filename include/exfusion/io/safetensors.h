// The safetensors format (8-byte little-endian header length, JSON header, raw buffer),
// read and written directly: the exchange format for timm and Hugging Face checkpoints.
// Loading validates every field so a damaged file fails with its name and the problem.
#pragma once
#include <torch/types.h>

#include <filesystem>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace exfusion {

using NamedTensors = std::vector<std::pair<std::string, torch::Tensor>>;  // order kept on write

struct SafetensorsFile {
  std::map<std::string, torch::Tensor> tensors;  // CPU, contiguous, owning
  std::map<std::string, std::string> metadata;
};

// Writes contiguous CPU copies laid out in the given order, atomically (temp file +
// rename). Supports F64, F32, F16, BF16, I64, I32, I16, I8, U8 and BOOL. Throws
// InputError on an empty, reserved ("__metadata__") or duplicate name or another dtype,
// before anything is written.
void save_safetensors(const std::filesystem::path& path, const NamedTensors& tensors,
                      const std::map<std::string, std::string>& metadata = {});

// Reads the whole file in one pass. Throws InputError naming `path` and the offending
// tensor or field for anything the format does not allow.
SafetensorsFile load_safetensors(const std::filesystem::path& path);
// The file's metadata alone, its header read and checked as load_safetensors does, no data read.
std::map<std::string, std::string> load_safetensors_metadata(const std::filesystem::path& path);

// Throws InputError naming `path` with the missing and unexpected names and the shape and
// dtype mismatches between `file` and `expected` (used to reject another architecture).
void validate_against(const SafetensorsFile& file, const NamedTensors& expected,
                      const std::filesystem::path& path);

}  // namespace exfusion
