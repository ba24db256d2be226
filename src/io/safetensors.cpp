// safetensors reader and writer (see safetensors.h). The loader checks the whole header
// against the file size (safetensors_header.h, torch-free) before allocating anything, then
// reads the buffer in one pass.
#include "exfusion/io/safetensors.h"

#include <optional>

#include <algorithm>
#include <cstdint>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <stdexcept>

#include "exfusion/io/safetensors_header.h"
#include "exfusion/util/atomic_file.h"
#include "exfusion/util/error.h"
#include "exfusion/util/fault_injection.h"
#include "exfusion/util/shape_text.h"

// Tensor bytes go to and from the file in host order, and the format is little-endian.
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "safetensors I/O assumes little-endian");

namespace exfusion {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

at::ScalarType scalar_type(SafetensorsDtype dtype) {
  switch (dtype) {
    case SafetensorsDtype::F64:
      return at::kDouble;
    case SafetensorsDtype::F32:
      return at::kFloat;
    case SafetensorsDtype::F16:
      return at::kHalf;
    case SafetensorsDtype::BF16:
      return at::kBFloat16;
    case SafetensorsDtype::I64:
      return at::kLong;
    case SafetensorsDtype::I32:
      return at::kInt;
    case SafetensorsDtype::I16:
      return at::kShort;
    case SafetensorsDtype::I8:
      return at::kChar;
    case SafetensorsDtype::U8:
      return at::kByte;
    case SafetensorsDtype::BOOL:
      return at::kBool;
  }
  throw std::logic_error("unhandled safetensors dtype");
}

std::optional<SafetensorsDtype> file_dtype(at::ScalarType type) {
  for (auto dtype :
       {SafetensorsDtype::F64, SafetensorsDtype::F32, SafetensorsDtype::F16, SafetensorsDtype::BF16,
        SafetensorsDtype::I64, SafetensorsDtype::I32, SafetensorsDtype::I16, SafetensorsDtype::I8,
        SafetensorsDtype::U8, SafetensorsDtype::BOOL}) {
    if (scalar_type(dtype) == type) return dtype;
  }
  return std::nullopt;
}

}  // namespace

void save_safetensors(const fs::path& path, const NamedTensors& tensors,
                      const std::map<std::string, std::string>& metadata) {
  const std::string where = path.string();
  // Header keys in layout order, metadata first, as the reference writer does.
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header[kSafetensorsMetadataKey] = metadata;
  std::set<std::string> seen;
  std::vector<torch::Tensor> payload;
  uint64_t offset = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const auto& [name, tensor] = tensors[i];
    if (name.empty()) {
      throw InputError(where + ": tensor #" + std::to_string(i) + " has an empty name");
    }
    if (name == kSafetensorsMetadataKey) {
      throw InputError(where + ": tensor name '" + name + "' is reserved for metadata");
    }
    if (!seen.insert(name).second) {
      throw InputError(where + ": duplicate tensor name '" + name + "'");
    }
    if (!tensor.defined()) {
      throw std::invalid_argument(where + ": tensor '" + name + "' is undefined");
    }
    const auto dtype = file_dtype(tensor.scalar_type());
    if (!dtype) {
      throw InputError(where + ": tensor '" + name + "' has dtype " +
                       c10::toString(tensor.scalar_type()) + "; safetensors files hold " +
                       supported_dtype_names());
    }
    auto cpu = tensor.detach().to(torch::kCPU).contiguous();
    const uint64_t bytes = cpu.nbytes();
    header[name] = {{"dtype", dtype_name(*dtype)},
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

namespace {

// Opens `path` and reads and checks its header, leaving `in` at the start of the data.
SafetensorsHeader read_header(const fs::path& path, std::ifstream& in) {
  const std::string where = path.string();
  std::error_code error;
  if (!fs::is_regular_file(path, error)) {
    throw InputError(where + (fs::exists(path, error) ? ": not a regular file" : ": no such file") +
                     " (expected a .safetensors file)");
  }
  const uint64_t file_size = fs::file_size(path, error);
  in.open(path, std::ios::binary);
  if (error || !in) throw InputError(where + ": cannot open the file for reading");
  if (file_size < 8) {
    throw InputError(where + ": " + std::to_string(file_size) +
                     " bytes is too short for a safetensors file (needs an 8-byte header length)");
  }
  unsigned char prefix[8];
  in.read(reinterpret_cast<char*>(prefix), sizeof(prefix));
  const uint64_t header_length = checked_header_length(prefix, file_size, where);
  std::string text(header_length, '\0');
  in.read(text.data(), static_cast<std::streamsize>(header_length));
  if (!in) throw InputError(where + ": could not read the header");
  return parse_safetensors_header(text, file_size - 8 - header_length, where);
}

}  // namespace

std::map<std::string, std::string> load_safetensors_metadata(const fs::path& path) {
  std::ifstream in;
  return read_header(path, in).metadata;
}

SafetensorsFile load_safetensors(const fs::path& path) {
  const std::string where = path.string();
  std::ifstream in;
  auto header = read_header(path, in);

  SafetensorsFile file;
  file.metadata = std::move(header.metadata);
  // Coverage is exact, so reading in offset order walks the buffer front to back.
  for (const auto& entry : header.entries) {
    auto tensor = torch::empty(entry.shape, torch::TensorOptions().dtype(scalar_type(entry.dtype)));
    const auto bytes = static_cast<std::streamsize>(entry.end - entry.begin);
    if (bytes > 0) in.read(static_cast<char*>(tensor.data_ptr()), bytes);
    if (!in) throw InputError(where + ": could not read the data of tensor '" + entry.name + "'");
    if (entry.dtype == SafetensorsDtype::BOOL) {
      check_bool_bytes(static_cast<const unsigned char*>(tensor.data_ptr()),
                       static_cast<uint64_t>(bytes), where, entry.name);
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
    } else if (found->second.scalar_type() != tensor.scalar_type()) {
      // Converting silently would hide a file from another tool or a damaged header.
      const auto file_type = file_dtype(found->second.scalar_type());
      const auto model_type = file_dtype(tensor.scalar_type());
      problems.push_back(name + ": dtype " + (file_type ? dtype_name(*file_type) : "?") +
                         " in file, expected " + (model_type ? dtype_name(*model_type) : "?"));
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
