// CIFAR binary files: pixels and labels as written (a record-by-record NumPy reader is the
// Python test's reference), CIFAR-100's coarse and fine labels, and each malformed case named.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <functional>

#include <unistd.h>

#include "../support/input_errors.h"
#include "exfusion/data/cifar.h"
#include "exfusion/util/error.h"

namespace exfusion {
namespace {
namespace fs = std::filesystem;

// Record i: labels (i % classes) [and i % 20 first for CIFAR-100], pixel p = (i + p) % 256.
std::string records(int64_t count, int label_bytes, int64_t first = 0) {
  std::string bytes;
  for (int64_t i = first; i < first + count; ++i) {
    if (label_bytes == 2) bytes.push_back(static_cast<char>(i % 20));
    bytes.push_back(static_cast<char>(i % (label_bytes == 2 ? 100 : 10)));
    for (int p = 0; p < 3072; ++p) bytes.push_back(static_cast<char>((i + p) % 256));
  }
  return bytes;
}

void write(const fs::path& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}

fs::path fresh_dir(const std::string& name) {
  const auto dir =
      fs::temp_directory_path() / ("exfusion-cifar-" + name + "-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

using testing::error_of;

TEST(Cifar10, ReadsEveryBatchInOrderWithItsLabelsAndPlanarPixels) {
  const auto dir = fresh_dir("10");
  for (int b = 1; b <= 5; ++b) {
    write(dir / ("data_batch_" + std::to_string(b) + ".bin"), records(3, 1, (b - 1) * 3));
  }
  write(dir / "test_batch.bin", records(2, 1, 100));
  write(dir / "batches.meta.txt",
        "airplane\nautomobile\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n\n");
  const auto files = cifar_files_in(dir, false);
  EXPECT_EQ(files.variant, CifarVariant::Cifar10);
  ASSERT_EQ(files.class_names.size(), 10u);
  EXPECT_EQ(files.class_names[9], "truck");
  const auto train = load_cifar(files.train, files.variant, false);
  ASSERT_EQ(train.images.sizes(), (std::vector<int64_t>{15, 3, 32, 32}));
  for (int64_t i = 0; i < 15; ++i) {
    EXPECT_EQ(train.labels[i].item<int64_t>(), i % 10);
    // Channel 1 (green) starts at byte 1024 of the record's pixels.
    EXPECT_EQ(train.images[i][1][0][5].item<int64_t>(), (i + 1024 + 5) % 256);
  }
  const auto test = load_cifar({files.test}, files.variant, false);
  EXPECT_EQ(test.labels[1].item<int64_t>(), 101 % 10);
  EXPECT_NE(error_of([&] { cifar_files_in(dir, true); }).find("CIFAR-10 has no coarse labels"),
            std::string::npos);
  fs::remove_all(dir);
}

TEST(Cifar100, ReadsFineOrCoarseLabels) {
  const auto dir = fresh_dir("100");
  write(dir / "train.bin", records(30, 2));
  write(dir / "test.bin", records(5, 2, 40));
  const auto files = cifar_files_in(dir, false);
  EXPECT_EQ(files.variant, CifarVariant::Cifar100);
  const auto fine = load_cifar(files.train, files.variant, false);
  const auto coarse = load_cifar(files.train, files.variant, true);
  EXPECT_EQ(fine.labels[25].item<int64_t>(), 25);
  EXPECT_EQ(coarse.labels[25].item<int64_t>(), 5);
  EXPECT_EQ(fine.images[7][2][31][31].item<int64_t>(), (7 + 3071) % 256);
  fs::remove_all(dir);
}

TEST(CifarErrors, NameTheFileAndWhatWasExpected) {
  const auto dir = fresh_dir("bad");
  EXPECT_NE(error_of([&] { cifar_files_in(dir, false); }).find("no CIFAR binary files"),
            std::string::npos);
  EXPECT_NE(error_of([&] { cifar_files_in(dir / "missing", false); }).find("no such directory"),
            std::string::npos);
  write(dir / "test_batch.bin", records(1, 1));
  EXPECT_NE(error_of([&] { cifar_files_in(dir, false); }).find("data_batch_1.bin: no such file"),
            std::string::npos);
  const std::string where = "x.bin";
  EXPECT_NE(error_of([&] {
              decode_cifar(records(2, 1).substr(0, 5000), CifarVariant::Cifar10, false, where);
            }).find("x.bin: 5000 bytes, expected a whole number of 3073-byte CIFAR-10 records"),
            std::string::npos);
  EXPECT_NE(
      error_of([&] { decode_cifar("", CifarVariant::Cifar10, false, where); }).find("0 bytes"),
      std::string::npos);
  auto bad_label = records(3, 1);
  bad_label[3073] = 12;  // record 1's label
  EXPECT_NE(error_of([&] {
              decode_cifar(bad_label, CifarVariant::Cifar10, false, where);
            }).find("x.bin: record 1 has label 12, expected 0..9"),
            std::string::npos);
  auto bad_coarse = records(2, 2);
  bad_coarse[0] = 20;
  EXPECT_NE(error_of([&] {
              decode_cifar(bad_coarse, CifarVariant::Cifar100, true, where);
            }).find("record 0 has label 20, expected 0..19"),
            std::string::npos);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace exfusion
