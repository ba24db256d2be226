// CIFAR binary files (see cifar.h): the records are checked whole before any tensor is made,
// so a truncated or foreign file is an error naming it and the record it breaks at.
#include "exfusion/data/cifar.h"

#include <cstring>
#include <fstream>

#include "exfusion/util/error.h"
#include "exfusion/util/file_bytes.h"

namespace exfusion {
namespace fs = std::filesystem;
namespace {

constexpr size_t kPixelsPerImage = size_t{3} * 32 * 32;

std::vector<std::string> read_names(const fs::path& path) {
  std::vector<std::string> names;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) {
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
    if (!line.empty()) names.push_back(line);
  }
  return names;
}

}  // namespace

CifarFiles cifar_files_in(const fs::path& dir, bool coarse) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    throw InputError(dir.string() + ": no such directory (data.dir, expected a CIFAR copy)");
  }
  CifarFiles files;
  if (fs::exists(dir / "train.bin", ec) || fs::exists(dir / "test.bin", ec)) {
    files.variant = CifarVariant::Cifar100;
    files.train = {dir / "train.bin"};
    files.test = dir / "test.bin";
    files.class_names =
        read_names(dir / (coarse ? "coarse_label_names.txt" : "fine_label_names.txt"));
  } else if (fs::exists(dir / "data_batch_1.bin", ec) || fs::exists(dir / "test_batch.bin", ec)) {
    if (coarse) {
      throw InputError(dir.string() + ": CIFAR-10 has no coarse labels (data.cifar_labels)");
    }
    for (int i = 1; i <= 5; ++i)
      files.train.push_back(dir / ("data_batch_" + std::to_string(i) + ".bin"));
    files.test = dir / "test_batch.bin";
    files.class_names = read_names(dir / "batches.meta.txt");
  } else {
    throw InputError(dir.string() +
                     ": no CIFAR binary files, expected data_batch_1..5.bin and test_batch.bin "
                     "(CIFAR-10) or train.bin and test.bin (CIFAR-100)");
  }
  for (const auto& path : files.train) {
    if (!fs::is_regular_file(path, ec)) throw InputError(path.string() + ": no such file");
  }
  if (!fs::is_regular_file(files.test, ec))
    throw InputError(files.test.string() + ": no such file");
  return files;
}

CifarRecords decode_cifar(std::string_view bytes, CifarVariant variant, bool coarse,
                          const std::string& where) {
  const size_t label_bytes = variant == CifarVariant::Cifar100 ? 2 : 1;
  const size_t record = label_bytes + kPixelsPerImage;
  const int64_t classes = variant == CifarVariant::Cifar10 ? 10 : coarse ? 20 : 100;
  if (bytes.empty() || bytes.size() % record != 0) {
    throw InputError(where + ": " + std::to_string(bytes.size()) + " bytes, expected a whole " +
                     "number of " + std::to_string(record) + "-byte CIFAR-" +
                     (variant == CifarVariant::Cifar10 ? "10" : "100") + " records");
  }
  const size_t count = bytes.size() / record;
  CifarRecords records;
  records.labels.reserve(count);
  records.pixels.resize(count * kPixelsPerImage);
  for (size_t i = 0; i < count; ++i) {
    const auto* row = reinterpret_cast<const uint8_t*>(bytes.data()) + i * record;
    // CIFAR-100 records hold the coarse label first, then the fine one.
    const int64_t label = label_bytes == 2 && !coarse ? row[1] : row[0];
    if (label >= classes) {
      throw InputError(where + ": record " + std::to_string(i) + " has label " +
                       std::to_string(label) + ", expected 0.." + std::to_string(classes - 1));
    }
    records.labels.push_back(label);
    std::memcpy(records.pixels.data() + i * kPixelsPerImage, row + label_bytes, kPixelsPerImage);
  }
  return records;
}

ImageDataset load_cifar(const std::vector<fs::path>& files, CifarVariant variant, bool coarse) {
  std::vector<torch::Tensor> images, labels;
  for (const auto& path : files) {
    auto records =
        decode_cifar(read_file_bytes(path, "a CIFAR binary file"), variant, coarse, path.string());
    const auto n = static_cast<int64_t>(records.labels.size());
    images.push_back(
        torch::from_blob(records.pixels.data(), {n, 3, 32, 32}, torch::kUInt8).clone());
    labels.push_back(torch::tensor(records.labels, torch::kInt64));
  }
  return {torch::cat(images), torch::cat(labels)};
}

}  // namespace exfusion
