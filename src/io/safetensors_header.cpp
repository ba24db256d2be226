// safetensors header checks (see safetensors_header.h). Sizes are overflow-checked at every
// multiplication, so an absurd shape cannot wrap around to a byte count that looks right.
#include "exfusion/io/safetensors_header.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <tuple>

#include "exfusion/util/error.h"
#include "exfusion/util/json_input.h"
#include "exfusion/util/shape_text.h"

namespace exfusion {
namespace {

using nlohmann::json;

struct DtypeInfo {
  SafetensorsDtype dtype;
  const char* name;
  size_t size;
};

constexpr std::array<DtypeInfo, 10> kDtypes = {{{SafetensorsDtype::F64, "F64", 8},
                                                {SafetensorsDtype::F32, "F32", 4},
                                                {SafetensorsDtype::F16, "F16", 2},
                                                {SafetensorsDtype::BF16, "BF16", 2},
                                                {SafetensorsDtype::I64, "I64", 8},
                                                {SafetensorsDtype::I32, "I32", 4},
                                                {SafetensorsDtype::I16, "I16", 2},
                                                {SafetensorsDtype::I8, "I8", 1},
                                                {SafetensorsDtype::U8, "U8", 1},
                                                {SafetensorsDtype::BOOL, "BOOL", 1}}};

const DtypeInfo& info(SafetensorsDtype dtype) {
  return *std::find_if(kDtypes.begin(), kDtypes.end(),
                       [dtype](const DtypeInfo& entry) { return entry.dtype == dtype; });
}

SafetensorsEntry parse_entry(const std::string& where, const std::string& name, const json& value,
                             uint64_t buffer_size) {
  const std::string field = where + ": tensor '" + name + "'";
  if (!value.is_object()) {
    throw InputError(field + ": expected an object with dtype, shape and data_offsets, got " +
                     brief_json(value));
  }
  for (const char* key : {"dtype", "shape", "data_offsets"}) {
    if (!value.contains(key)) throw InputError(field + ": missing \"" + key + "\"");
  }
  const auto& dtype_value = value["dtype"];
  if (!dtype_value.is_string()) {
    throw InputError(field + ": \"dtype\" must be a string, got " + brief_json(dtype_value));
  }
  const auto dtype = dtype_from_name(dtype_value.get_ref<const std::string&>());
  if (!dtype) {
    throw InputError(field + ": unsupported dtype " + brief_json(dtype_value) +
                     " (expected one of " + supported_dtype_names() + ")");
  }
  SafetensorsEntry entry{name, *dtype, {}, 0, 0};

  const auto& shape = value["shape"];
  const bool shape_ok =
      shape.is_array() &&
      std::all_of(shape.begin(), shape.end(), [](const json& d) { return d.is_number_unsigned(); });
  if (!shape_ok) {
    throw InputError(field + ": \"shape\" must be an array of non-negative integers, got " +
                     brief_json(shape));
  }
  // The byte count must match the offsets, and the element count of the non-zero dimensions
  // must fit int64_t: LibTorch computes strides from them even when another dimension is 0.
  constexpr auto kLimit = static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
  uint64_t bytes = dtype_size(*dtype);
  uint64_t strided = 1;
  for (const auto& d : shape) {
    const auto size = d.get<uint64_t>();
    const bool too_large = size > kLimit || __builtin_mul_overflow(bytes, size, &bytes) ||
                           (size > 0 && (__builtin_mul_overflow(strided, size, &strided) ||
                                         strided > kLimit / dtype_size(*dtype)));
    if (too_large) {
      throw InputError(field + ": shape " + brief_json(shape) + " is too large");
    }
    entry.shape.push_back(static_cast<int64_t>(size));
  }

  const auto& offsets = value["data_offsets"];
  if (!offsets.is_array() || offsets.size() != 2 || !offsets[0].is_number_unsigned() ||
      !offsets[1].is_number_unsigned()) {
    throw InputError(field + ": \"data_offsets\" must be [begin, end] with non-negative " +
                     "integers, got " + brief_json(offsets));
  }
  entry.begin = offsets[0].get<uint64_t>();
  entry.end = offsets[1].get<uint64_t>();
  const std::string range =
      "data_offsets [" + std::to_string(entry.begin) + ", " + std::to_string(entry.end) + "]";
  if (entry.end < entry.begin) throw InputError(field + ": " + range + " end before begin");
  if (entry.end > buffer_size) {
    throw InputError(field + ": " + range + " outside the " + std::to_string(buffer_size) +
                     "-byte data buffer");
  }
  if (entry.end - entry.begin != bytes) {
    throw InputError(field + ": " + range + " span " + std::to_string(entry.end - entry.begin) +
                     " bytes, expected " + std::to_string(bytes) + " for " + dtype_name(*dtype) +
                     " shape " + shape_text(entry.shape));
  }
  return entry;
}

std::map<std::string, std::string> parse_metadata(const std::string& where, const json& value) {
  std::map<std::string, std::string> metadata;
  // The reference implementation reads a null __metadata__ as no metadata.
  if (value.is_null()) return metadata;
  if (!value.is_object()) {
    throw InputError(where + ": __metadata__ must be an object of strings, got " +
                     brief_json(value));
  }
  for (const auto& [key, item] : value.items()) {
    if (!item.is_string()) {
      throw InputError(where + ": __metadata__." + key.substr(0, 60) + " must be a string, got " +
                       brief_json(item));
    }
    metadata.emplace(key, item.get<std::string>());
  }
  return metadata;
}

// The format requires the tensors to tile the buffer exactly: no overlap, no unused byte.
void check_coverage(const std::string& where, std::vector<SafetensorsEntry>& entries,
                    uint64_t buffer_size) {
  std::sort(entries.begin(), entries.end(), [](const auto& a, const auto& b) {
    return std::tie(a.begin, a.end) < std::tie(b.begin, b.end);
  });
  uint64_t covered = 0;
  const SafetensorsEntry* previous = nullptr;
  for (const auto& entry : entries) {
    if (entry.begin < covered) {
      throw InputError(where + ": tensors '" + previous->name + "' and '" + entry.name +
                       "' overlap in the data buffer (at byte " + std::to_string(entry.begin) +
                       ")");
    }
    if (entry.begin > covered) {
      throw InputError(where + ": data buffer bytes [" + std::to_string(covered) + ", " +
                       std::to_string(entry.begin) + ") belong to no tensor (gap before '" +
                       entry.name + "')");
    }
    covered = entry.end;
    previous = &entry;
  }
  if (covered != buffer_size) {
    throw InputError(where + ": " + std::to_string(buffer_size - covered) +
                     " trailing bytes after the last tensor belong to no tensor");
  }
}

}  // namespace

const char* dtype_name(SafetensorsDtype dtype) { return info(dtype).name; }
size_t dtype_size(SafetensorsDtype dtype) { return info(dtype).size; }

std::optional<SafetensorsDtype> dtype_from_name(std::string_view name) {
  for (const auto& entry : kDtypes) {
    if (name == entry.name) return entry.dtype;
  }
  return std::nullopt;
}

std::string supported_dtype_names() {
  std::string list;
  for (const auto& entry : kDtypes) list += (list.empty() ? "" : ", ") + std::string(entry.name);
  return list;
}

uint64_t checked_header_length(const unsigned char (&prefix)[8], uint64_t file_size,
                               const std::string& where) {
  uint64_t length = 0;
  for (int i = 7; i >= 0; --i) length = (length << 8) | prefix[i];
  if (length > file_size - 8) {
    throw InputError(where + ": header length " + std::to_string(length) +
                     " exceeds the file size " + std::to_string(file_size) +
                     " (truncated or not a safetensors file?)");
  }
  if (length > kMaxSafetensorsHeaderBytes) {
    throw InputError(where + ": header length " + std::to_string(length) + " exceeds the " +
                     std::to_string(kMaxSafetensorsHeaderBytes) + "-byte limit for a header");
  }
  return length;
}

SafetensorsHeader parse_safetensors_header(std::string_view text, uint64_t buffer_size,
                                           const std::string& where) {
  const json header = parse_json_input(text, where + ": header");
  if (!header.is_object()) {
    throw InputError(where + ": the header is a JSON " + std::string(header.type_name()) +
                     ", expected a JSON object");
  }
  SafetensorsHeader parsed;
  for (const auto& [name, value] : header.items()) {
    if (name == kSafetensorsMetadataKey) {
      parsed.metadata = parse_metadata(where, value);
    } else {
      parsed.entries.push_back(parse_entry(where, name, value, buffer_size));
    }
  }
  check_coverage(where, parsed.entries, buffer_size);
  return parsed;
}

void check_bool_bytes(const unsigned char* data, uint64_t size, const std::string& where,
                      const std::string& name) {
  if (std::any_of(data, data + size, [](unsigned char b) { return b > 1; })) {
    throw InputError(where + ": tensor '" + name + "': BOOL values must be 0 or 1");
  }
}

}  // namespace exfusion
