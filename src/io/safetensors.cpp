// safetensors reader and writer (see safetensors.h). The loader checks the whole header
// against the file size before allocating anything, then reads the buffer in one pass.
#include "exfusion/io/safetensors.h"

#include <algorithm>
#include <cstdint>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <stdexcept>

#include "exfusion/util/atomic_file.h"
#include "exfusion/util/error.h"
#include "exfusion/util/fault_injection.h"

// Tensor bytes go to and from the file in host order, and the format is little-endian.
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "safetensors I/O assumes little-endian");

namespace exfusion {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr const char* kMetadataKey = "__metadata__";

const std::vector<std::pair<std::string, at::ScalarType>>& dtype_names() {
  static const std::vector<std::pair<std::string, at::ScalarType>> names = {
      {"F64", at::kDouble}, {"F32", at::kFloat}, {"F16", at::kHalf},  {"BF16", at::kBFloat16},
      {"I64", at::kLong},   {"I32", at::kInt},   {"I16", at::kShort}, {"I8", at::kChar},
      {"U8", at::kByte},    {"BOOL", at::kBool}};
  return names;
}

std::string supported_dtypes() {
  std::string list;
  for (const auto& [name, type] : dtype_names()) list += (list.empty() ? "" : ", ") + name;
  return list;
}

std::string shape_text(at::IntArrayRef sizes) {
  std::ostringstream out;
  out << sizes;
  return out.str();
}

// A bad header value quoted in a message, cut short so a huge array cannot flood it.
std::string quoted(const json& value) {
  std::string text = value.dump();
  return text.size() > 60 ? text.substr(0, 57) + "..." : text;
}

struct Entry {
  std::string name;
  at::ScalarType type;
  std::vector<int64_t> shape;
  uint64_t begin;
  uint64_t end;
};

Entry parse_entry(const std::string& where, const std::string& name, const json& value,
                  uint64_t buffer_size) {
  const std::string field = where + ": tensor '" + name + "'";
  if (!value.is_object()) {
    throw InputError(field + ": expected an object with dtype, shape and data_offsets, got " +
                     quoted(value));
  }
  for (const char* key : {"dtype", "shape", "data_offsets"}) {
    if (!value.contains(key)) throw InputError(field + ": missing \"" + key + "\"");
  }
  Entry entry{name, at::kFloat, {}, 0, 0};

  const auto& dtype = value["dtype"];
  if (!dtype.is_string()) {
    throw InputError(field + ": \"dtype\" must be a string, got " + quoted(dtype));
  }
  const auto known = std::find_if(dtype_names().begin(), dtype_names().end(),
                                  [&](const auto& pair) { return pair.first == dtype; });
  if (known == dtype_names().end()) {
    throw InputError(field + ": unsupported dtype " + quoted(dtype) + " (expected one of " +
                     supported_dtypes() + ")");
  }
  entry.type = known->second;

  const auto& shape = value["shape"];
  const bool shape_ok =
      shape.is_array() &&
      std::all_of(shape.begin(), shape.end(), [](const json& d) { return d.is_number_unsigned(); });
  if (!shape_ok) {
    throw InputError(field + ": \"shape\" must be an array of non-negative integers, got " +
                     quoted(shape));
  }
  // Overflow-checked, so an absurd shape cannot wrap around to the right byte count.
  uint64_t bytes = c10::elementSize(entry.type);
  for (const auto& d : shape) {
    const auto size = d.get<uint64_t>();
    if (size > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ||
        __builtin_mul_overflow(bytes, size, &bytes)) {
      throw InputError(field + ": shape " + quoted(shape) + " is too large");
    }
    entry.shape.push_back(static_cast<int64_t>(size));
  }

  const auto& offsets = value["data_offsets"];
  if (!offsets.is_array() || offsets.size() != 2 || !offsets[0].is_number_unsigned() ||
      !offsets[1].is_number_unsigned()) {
    throw InputError(field + ": \"data_offsets\" must be [begin, end] with non-negative " +
                     "integers, got " + quoted(offsets));
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
                     " bytes, expected " + std::to_string(bytes) + " for " + known->first +
                     " shape " + shape_text(entry.shape));
  }
  return entry;
}

std::map<std::string, std::string> parse_metadata(const std::string& where, const json& value) {
  std::map<std::string, std::string> metadata;
  // The reference implementation reads a null __metadata__ as no metadata.
  if (value.is_null()) return metadata;
  if (!value.is_object()) {
    throw InputError(where + ": __metadata__ must be an object of strings, got " + quoted(value));
  }
  for (const auto& [key, item] : value.items()) {
    if (!item.is_string()) {
      throw InputError(where + ": __metadata__." + key + " must be a string, got " + quoted(item));
    }
    metadata.emplace(key, item.get<std::string>());
  }
  return metadata;
}

// The format requires the tensors to tile the buffer exactly: no overlap, no unused byte.
void check_coverage(const std::string& where, std::vector<Entry>& entries, uint64_t buffer_size) {
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    return std::tie(a.begin, a.end) < std::tie(b.begin, b.end);
  });
  uint64_t covered = 0;
  const Entry* previous = nullptr;
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

void save_safetensors(const fs::path& path, const NamedTensors& tensors,
                      const std::map<std::string, std::string>& metadata) {
  const std::string where = path.string();
  // Header keys in layout order, metadata first, as the reference writer does.
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header[kMetadataKey] = metadata;
  std::set<std::string> seen;
  std::vector<torch::Tensor> payload;
  uint64_t offset = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const auto& [name, tensor] = tensors[i];
    if (name.empty()) {
      throw InputError(where + ": tensor #" + std::to_string(i) + " has an empty name");
    }
    if (name == kMetadataKey) {
      throw InputError(where + ": tensor name '" + name + "' is reserved for metadata");
    }
    if (!seen.insert(name).second) {
      throw InputError(where + ": duplicate tensor name '" + name + "'");
    }
    if (!tensor.defined()) {
      throw std::invalid_argument(where + ": tensor '" + name + "' is undefined");
    }
    const auto type = tensor.scalar_type();  // a structured binding cannot be captured in C++17
    const auto known = std::find_if(dtype_names().begin(), dtype_names().end(),
                                    [type](const auto& pair) { return pair.second == type; });
    if (known == dtype_names().end()) {
      throw InputError(where + ": tensor '" + name + "' has dtype " +
                       c10::toString(tensor.scalar_type()) + "; safetensors files hold " +
                       supported_dtypes());
    }
    auto cpu = tensor.detach().to(torch::kCPU).contiguous();
    const uint64_t bytes = cpu.nbytes();
    header[name] = {{"dtype", known->first},
                    {"shape", cpu.sizes().vec()},
                    {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
    payload.push_back(std::move(cpu));
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const nlohmann::json::exception&) {
    throw InputError(where + ": tensor names and metadata must be valid UTF-8");
  }
  // Padding keeps the data buffer 8-byte aligned for readers that map the file.
  text.append((8 - text.size() % 8) % 8, ' ');
  write_file_atomically(path, [&](std::ostream& out) {
    const uint64_t length = text.size();
    out.write(reinterpret_cast<const char*>(&length), sizeof(length));
    out.write(text.data(), static_cast<std::streamsize>(text.size()));
    for (size_t i = 0; i < payload.size(); ++i) {
      const auto& t = payload[i];
      out.write(static_cast<const char*>(t.data_ptr()), static_cast<std::streamsize>(t.nbytes()));
      if (i == payload.size() / 2) {
        out.flush();  // half the file on disk where the resume tests kill a write
        fault_point("safetensors-write");
      }
    }
  });
}

SafetensorsFile load_safetensors(const fs::path& path) {
  const std::string where = path.string();
  std::error_code error;
  if (!fs::is_regular_file(path, error)) {
    throw InputError(where + (fs::exists(path, error) ? ": not a regular file" : ": no such file") +
                     " (expected a .safetensors file)");
  }
  const uint64_t file_size = fs::file_size(path, error);
  std::ifstream in(path, std::ios::binary);
  if (error || !in) throw InputError(where + ": cannot open the file for reading");
  if (file_size < 8) {
    throw InputError(where + ": " + std::to_string(file_size) +
                     " bytes is too short for a safetensors file (needs an 8-byte header length)");
  }
  uint64_t header_length = 0;
  in.read(reinterpret_cast<char*>(&header_length), sizeof(header_length));
  if (header_length > file_size - 8) {
    throw InputError(where + ": header length " + std::to_string(header_length) +
                     " exceeds the file size " + std::to_string(file_size) +
                     " (truncated or not a safetensors file?)");
  }
  std::string text(header_length, '\0');
  in.read(text.data(), static_cast<std::streamsize>(header_length));
  if (!in) throw InputError(where + ": could not read the header");
  const json header = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (header.is_discarded()) throw InputError(where + ": the header is not valid JSON");
  if (!header.is_object()) {
    throw InputError(where + ": the header is a JSON " + std::string(header.type_name()) +
                     ", expected a JSON object");
  }

  const uint64_t buffer_size = file_size - 8 - header_length;
  SafetensorsFile file;
  std::vector<Entry> entries;
  for (const auto& [name, value] : header.items()) {
    if (name == kMetadataKey) {
      file.metadata = parse_metadata(where, value);
    } else {
      entries.push_back(parse_entry(where, name, value, buffer_size));
    }
  }
  check_coverage(where, entries, buffer_size);

  // Coverage is exact, so reading in offset order walks the buffer front to back.
  for (const auto& entry : entries) {
    auto tensor = torch::empty(entry.shape, torch::TensorOptions().dtype(entry.type));
    const auto bytes = static_cast<std::streamsize>(entry.end - entry.begin);
    if (bytes > 0) in.read(static_cast<char*>(tensor.data_ptr()), bytes);
    if (!in) throw InputError(where + ": could not read the data of tensor '" + entry.name + "'");
    if (entry.type == at::kBool) {
      const auto* raw = static_cast<const unsigned char*>(tensor.data_ptr());
      if (std::any_of(raw, raw + bytes, [](unsigned char b) { return b > 1; })) {
        throw InputError(where + ": tensor '" + entry.name + "': BOOL values must be 0 or 1");
      }
    }
    file.tensors.emplace(entry.name, std::move(tensor));
  }
  return file;
}

void validate_against(const SafetensorsFile& file, const NamedTensors& expected,
                      const fs::path& path) {
  std::vector<std::string> problems;
  std::set<std::string> wanted;
  for (const auto& [name, tensor] : expected) {
    wanted.insert(name);
    const auto found = file.tensors.find(name);
    if (found == file.tensors.end()) {
      problems.push_back(name + ": missing from the file");
    } else if (found->second.sizes() != tensor.sizes()) {
      problems.push_back(name + ": shape " + shape_text(found->second.sizes()) +
                         " in file, expected " + shape_text(tensor.sizes()));
    }
  }
  for (const auto& [name, tensor] : file.tensors) {
    if (wanted.count(name) == 0) problems.push_back(name + ": unexpected, not in this model");
  }
  if (problems.empty()) return;
  constexpr size_t kShown = 10;
  std::string message = path.string() + ": checkpoint does not match this model's architecture (" +
                        std::to_string(problems.size()) + " differences):";
  for (size_t i = 0; i < std::min(problems.size(), kShown); ++i) message += "\n  " + problems[i];
  if (problems.size() > kShown) {
    message += "\n  and " + std::to_string(problems.size() - kShown) + " more";
  }
  throw InputError(message);
}

}  // namespace exfusion
