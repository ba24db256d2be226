// IDX reading (see idx.h). The whole file is read first so that its exact length is known
// before a header's dims are trusted; zlib's gz* functions read gzip and raw files alike.
#include "exfusion/data/idx.h"

#include <zlib.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <iomanip>
#include <memory>
#include <optional>
#include <sstream>
#include <string>

#include "exfusion/util/error.h"

namespace exfusion {
namespace {

std::vector<unsigned char> read_all(const std::filesystem::path& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) throw InputError(path.string() + ": no such file");
  if (!std::filesystem::is_regular_file(path, ec)) {
    throw InputError(path.string() + ": not a regular file, expected an IDX file");
  }
  std::unique_ptr<gzFile_s, int (*)(gzFile)> file(gzopen(path.c_str(), "rb"), gzclose);
  if (!file)
    throw InputError(path.string() + ": cannot open the file (" + std::strerror(errno) + ")");
  gzbuffer(file.get(), 1 << 17);
  std::vector<unsigned char> bytes;
  const auto stored = std::filesystem::file_size(path, ec);
  if (!ec) bytes.reserve(stored);
  std::array<unsigned char, 1 << 17> chunk;
  int got = 0;
  while ((got = gzread(file.get(), chunk.data(), chunk.size())) > 0) {
    bytes.insert(bytes.end(), chunk.data(), chunk.data() + got);
  }
  int code = Z_OK;
  const char* message = gzerror(file.get(), &code);
  if (got < 0 || (code != Z_OK && code != Z_STREAM_END)) {
    throw InputError(path.string() + ": cannot decompress (" + message +
                     "), expected a complete gzip stream");
  }
  return bytes;
}

std::string hex(uint32_t value, int digits) {
  std::ostringstream out;
  out << "0x" << std::hex << std::setfill('0') << std::setw(digits) << value;
  return out.str();
}

struct IdxType {
  at::ScalarType dtype;
  const char* name;
};

std::optional<IdxType> idx_type(unsigned char code) {
  switch (code) {
    case 0x08:
      return IdxType{at::kByte, "uint8"};
    case 0x09:
      return IdxType{at::kChar, "int8"};
    case 0x0B:
      return IdxType{at::kShort, "int16"};
    case 0x0C:
      return IdxType{at::kInt, "int32"};
    case 0x0D:
      return IdxType{at::kFloat, "float32"};
    case 0x0E:
      return IdxType{at::kDouble, "float64"};
    default:
      return std::nullopt;
  }
}

const char* type_name(at::ScalarType dtype) {
  for (unsigned char code : {0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E}) {
    if (idx_type(code)->dtype == dtype) return idx_type(code)->name;
  }
  return c10::toString(dtype);
}

uint32_t big_endian32(const unsigned char* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | p[3];
}

std::string shape_text(at::IntArrayRef sizes) {
  std::ostringstream out;
  out << sizes;
  return out.str();
}

}  // namespace

torch::Tensor read_idx(const std::filesystem::path& path) {
  const auto bytes = read_all(path);
  const std::string where = path.string();
  if (bytes.size() < 4) {
    throw InputError(where + ": " + std::to_string(bytes.size()) +
                     " bytes, too short for the 4-byte IDX magic");
  }
  const uint32_t magic = big_endian32(bytes.data());
  if (bytes[0] != 0 || bytes[1] != 0) {
    throw InputError(where + ": IDX magic " + hex(magic, 8) +
                     ", expected 0x0000TTNN (two zero bytes, type TT, NN dims): not an IDX file");
  }
  const auto type = idx_type(bytes[2]);
  if (!type) {
    throw InputError(where + ": IDX magic " + hex(magic, 8) + " has type byte " + hex(bytes[2], 2) +
                     ", expected 0x08 (uint8), 0x09 (int8), 0x0B (int16), 0x0C (int32), 0x0D "
                     "(float32) or 0x0E (float64)");
  }
  const size_t ndims = bytes[3];
  if (ndims == 0) {
    throw InputError(where + ": IDX magic " + hex(magic, 8) +
                     " declares 0 dimensions, expected at least 1");
  }
  const size_t header = 4 + 4 * ndims;
  if (bytes.size() < header) {
    throw InputError(where + ": truncated IDX header: " + std::to_string(ndims) + " dims need " +
                     std::to_string(header) + " bytes, the file has " +
                     std::to_string(bytes.size()));
  }
  const size_t element = c10::elementSize(type->dtype);
  const size_t data_bytes = bytes.size() - header;
  std::vector<int64_t> dims;
  size_t numel = 1;
  long double wanted = element;  // only for the message: a bad header can overflow size_t
  for (size_t i = 0; i < ndims; ++i) {
    const uint32_t d = big_endian32(&bytes[4 + 4 * i]);
    if (d == 0) throw InputError(where + ": dimension " + std::to_string(i) + " is 0");
    dims.push_back(d);
    wanted *= d;
    numel = numel > data_bytes / d ? data_bytes + 1 : numel * d;
  }
  if (numel > data_bytes / element) {
    std::ostringstream message;
    message << where << ": truncated: shape " << shape_text(dims) << " of " << type->name
            << " needs " << std::fixed << std::setprecision(0) << wanted
            << " data bytes, the file has " << data_bytes << " after the header";
    throw InputError(message.str());
  }
  if (data_bytes > numel * element) {
    throw InputError(where + ": " + std::to_string(data_bytes - numel * element) +
                     " unexpected bytes after the data of shape " + shape_text(dims) +
                     ", expected the file to end there");
  }
  auto tensor = torch::empty(dims, torch::TensorOptions().dtype(type->dtype));
  std::memcpy(tensor.data_ptr(), bytes.data() + header, numel * element);
  if (element > 1) {
    // IDX values are big-endian and LibTorch's CPU tensors are little-endian.
    auto raw = tensor.view(torch::kByte).view({static_cast<int64_t>(numel), -1});
    tensor = raw.flip({1}).contiguous().view(type->dtype).view(dims);
  }
  return tensor;
}

ImageDataset load_idx_pair(const std::filesystem::path& images_path,
                           const std::filesystem::path& labels_path) {
  auto images = read_idx(images_path);
  auto labels = read_idx(labels_path);
  if (images.scalar_type() != at::kByte || (images.dim() != 3 && images.dim() != 4)) {
    throw InputError(images_path.string() + ": images of shape " + shape_text(images.sizes()) +
                     " and type " + type_name(images.scalar_type()) +
                     ", expected uint8 [N, H, W] or [N, H, W, C]");
  }
  if (labels.scalar_type() != at::kByte || labels.dim() != 1) {
    throw InputError(labels_path.string() + ": labels of shape " + shape_text(labels.sizes()) +
                     " and type " + type_name(labels.scalar_type()) + ", expected uint8 [N]");
  }
  if (labels.size(0) != images.size(0)) {
    throw InputError(labels_path.string() + ": " + std::to_string(labels.size(0)) +
                     " labels for the " + std::to_string(images.size(0)) + " images of " +
                     images_path.string() + ", expected one label per image");
  }
  images = images.dim() == 3 ? images.unsqueeze(1) : images.permute({0, 3, 1, 2}).contiguous();
  return {images, labels.to(torch::kInt64)};
}

IdxPaths idx_paths_in(const std::filesystem::path& dir) {
  if (!std::filesystem::is_directory(dir)) {
    throw InputError(dir.string() +
                     ": no such data directory, expected one holding train-images-idx3-ubyte "
                     "and the other MNIST-named IDX files");
  }
  auto find = [&](const std::string& name) {
    for (const auto& candidate : {dir / name, dir / (name + ".gz")}) {
      if (std::filesystem::exists(candidate)) return candidate;
    }
    throw InputError(dir.string() + ": no " + name + " (or " + name + ".gz) in this directory");
  };
  return {find("train-images-idx3-ubyte"), find("train-labels-idx1-ubyte"),
          find("t10k-images-idx3-ubyte"), find("t10k-labels-idx1-ubyte")};
}

std::pair<std::vector<float>, std::vector<float>> channel_mean_std(const torch::Tensor& images_u8) {
  TORCH_CHECK(images_u8.scalar_type() == at::kByte && images_u8.dim() == 4,
              "channel_mean_std expects uint8 [N, C, H, W], got ", images_u8.sizes());
  // A histogram of the 256 byte values gives exact moments without a float copy of the images.
  const auto images = images_u8.contiguous();
  const int64_t n = images.size(0), channels = images.size(1);
  const int64_t plane = images.size(2) * images.size(3);
  std::vector<std::array<int64_t, 256>> counts(channels, std::array<int64_t, 256>{});
  const uint8_t* pixels = images.data_ptr<uint8_t>();
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t c = 0; c < channels; ++c) {
      auto& count = counts[c];
      const uint8_t* p = pixels + (i * channels + c) * plane;
      for (int64_t k = 0; k < plane; ++k) ++count[p[k]];
    }
  }
  std::vector<float> means, stds;
  for (const auto& count : counts) {
    double total = 0, sum = 0, square_sum = 0;
    for (int v = 0; v < 256; ++v) {
      const double x = v / 255.0, weight = static_cast<double>(count[v]);
      total += weight;
      sum += weight * x;
      square_sum += weight * x * x;
    }
    const double mean = total > 0 ? sum / total : 0.0;
    const double variance = total > 0 ? std::max(0.0, square_sum / total - mean * mean) : 0.0;
    means.push_back(static_cast<float>(mean));
    stds.push_back(static_cast<float>(std::sqrt(variance)));
  }
  return {means, stds};
}

}  // namespace exfusion
