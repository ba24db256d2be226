// IDX files as tensors (see idx.h): the bytes are decoded and checked by the torch-free
// decoder (idx_format.h), then copied into a tensor of the file's own dtype and shape.
#include "exfusion/data/idx.h"

#include <unistd.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <iomanip>
#include <memory>
#include <optional>
#include <string>

#include "exfusion/data/idx_format.h"
#include "exfusion/util/error.h"
#include "exfusion/util/file_bytes.h"
#include "exfusion/util/shape_text.h"

namespace exfusion {
namespace {

// The data of one file may take at most this machine's memory: a header that promises more
// is an error before anything is allocated.
uint64_t physical_memory_bytes() {
  const long pages = sysconf(_SC_PHYS_PAGES), page_size = sysconf(_SC_PAGE_SIZE);
  return pages > 0 && page_size > 0
             ? static_cast<uint64_t>(pages) * static_cast<uint64_t>(page_size)
             : uint64_t{1} << 34;
}

at::ScalarType scalar_type(IdxType type) {
  switch (type) {
    case IdxType::U8:
      return at::kByte;
    case IdxType::I8:
      return at::kChar;
    case IdxType::I16:
      return at::kShort;
    case IdxType::I32:
      return at::kInt;
    case IdxType::F32:
      return at::kFloat;
    case IdxType::F64:
      return at::kDouble;
  }
  throw std::logic_error("unhandled IDX type");
}

const char* type_name(at::ScalarType dtype) {
  for (auto type :
       {IdxType::U8, IdxType::I8, IdxType::I16, IdxType::I32, IdxType::F32, IdxType::F64}) {
    if (scalar_type(type) == dtype) return idx_type_name(type);
  }
  return c10::toString(dtype);
}

}  // namespace

torch::Tensor read_idx(const std::filesystem::path& path) {
  const auto array =
      decode_idx(read_file_bytes(path, "an IDX file"), path.string(), physical_memory_bytes());
  auto tensor = torch::empty(array.dims, torch::TensorOptions().dtype(scalar_type(array.type)));
  std::memcpy(tensor.data_ptr(), array.data.data(), array.data.size());
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
