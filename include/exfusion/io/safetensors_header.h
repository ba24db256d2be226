// The safetensors header (8-byte little-endian length, then a JSON table of tensors) parsed
// and checked without LibTorch: every name, dtype, shape and offset is validated against the
// data buffer's size before anything is allocated, so the fuzz target runs this part alone.
#pragma once
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace exfusion {

// The header's reserved entry for the file's string metadata (not a tensor).
inline constexpr const char* kSafetensorsMetadataKey = "__metadata__";

enum class SafetensorsDtype { F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL };

// The format's name ("F32") and element size of a dtype.
const char* dtype_name(SafetensorsDtype dtype);
size_t dtype_size(SafetensorsDtype dtype);
std::optional<SafetensorsDtype> dtype_from_name(std::string_view name);
std::string supported_dtype_names();  // "F64, F32, ..., BOOL"

struct SafetensorsEntry {
  std::string name;
  SafetensorsDtype dtype;
  std::vector<int64_t> shape;  // each dimension and their product fit int64_t
  uint64_t begin;              // byte range in the data buffer
  uint64_t end;
};

struct SafetensorsHeader {
  std::vector<SafetensorsEntry> entries;  // in data-buffer order, tiling it exactly
  std::map<std::string, std::string> metadata;
};

// The reference implementation's limit: no real header comes near it.
constexpr uint64_t kMaxSafetensorsHeaderBytes = 100'000'000;

// The JSON header length read from a file's first 8 bytes, checked against the file size and
// the limit. Throws InputError "<where>: header length N exceeds ...".
uint64_t checked_header_length(const unsigned char (&prefix)[8], uint64_t file_size,
                               const std::string& where);

// Parses the header text (padding spaces allowed) for a data buffer of `buffer_size` bytes.
// Throws InputError naming `where`, the tensor and the field for anything the format does not
// allow: bad JSON or nesting, duplicate names, unknown dtypes, shapes whose byte count or
// element count overflow, offsets outside the buffer, and tensors that overlap or leave
// bytes of the buffer unused.
SafetensorsHeader parse_safetensors_header(std::string_view text, uint64_t buffer_size,
                                           const std::string& where);

// Throws InputError unless every byte of a BOOL tensor's data is 0 or 1.
void check_bool_bytes(const unsigned char* data, uint64_t size, const std::string& where,
                      const std::string& name);

}  // namespace exfusion
