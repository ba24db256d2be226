// IDX reading: raw and gzip files read back exactly; every malformed file is reported
// with its path; the real Fashion-MNIST test split from the Debian package loads.
#include <gtest/gtest.h>
#include <unistd.h>
#include <zlib.h>

#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "../support/cli.h"
#include "exfusion/data/idx.h"
#include "exfusion/data/idx_format.h"
#include "exfusion/util/error.h"

namespace exfusion {
namespace {

const char* const kMnistNames[] = {"train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                   "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"};

void write_bytes(const std::filesystem::path& path, const std::vector<unsigned char>& bytes) {
  std::ofstream(path, std::ios::binary)
      .write(reinterpret_cast<const char*>(bytes.data()),
             static_cast<std::streamsize>(bytes.size()));
}

void gzip(const std::filesystem::path& from, const std::filesystem::path& to) {
  const auto bytes = testing::read_text(from);
  gzFile out = gzopen(to.c_str(), "wb");
  ASSERT_NE(out, nullptr) << to;
  ASSERT_EQ(gzwrite(out, bytes.data(), static_cast<unsigned>(bytes.size())),
            static_cast<int>(bytes.size()));
  ASSERT_EQ(gzclose(out), Z_OK);
}

// EXPECT_THROW with the message checked too: a user must be told which file is wrong and how.
void expect_input_error(const std::function<void()>& action, const std::filesystem::path& path,
                        const std::string& phrase) {
  EXPECT_THROW(action(), InputError);
  try {
    action();
  } catch (const InputError& error) {
    const std::string what = error.what();
    EXPECT_NE(what.find(path.string()), std::string::npos) << what;
    EXPECT_NE(what.find(phrase), std::string::npos) << "'" << phrase << "' not in: " << what;
  } catch (...) {
  }
}

// std::filesystem::remove_all is avoided: the copy that libtorch.so exports (pytorch#133437)
// wins symbol resolution and crashes on a non-empty directory.
void remove_tree(const std::filesystem::path& dir) {
  if (!std::filesystem::exists(dir)) return;
  std::vector<std::filesystem::path> entries;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(dir)) {
    entries.push_back(entry.path());
  }
  // Pre-order reversed puts every entry before the directory that holds it.
  for (auto it = entries.rbegin(); it != entries.rend(); ++it) std::filesystem::remove(*it);
  std::filesystem::remove(dir);
}

class Idx : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("exfusion-test-idx-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    remove_tree(dir_);
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { remove_tree(dir_); }

  std::filesystem::path dir_;
};

TEST_F(Idx, ReadsRawAndGzipExactly) {
  std::vector<unsigned char> payload(2 * 3 * 4);
  for (size_t i = 0; i < payload.size(); ++i) payload[i] = static_cast<unsigned char>(i * 37);
  testing::write_idx_u8(dir_ / "raw", {2, 3, 4}, payload);
  gzip(dir_ / "raw", dir_ / "packed.gz");
  const auto expected = torch::from_blob(payload.data(), {2, 3, 4}, torch::kUInt8);
  const auto raw = read_idx(dir_ / "raw"), packed = read_idx(dir_ / "packed.gz");
  EXPECT_EQ(raw.scalar_type(), torch::kUInt8);
  EXPECT_TRUE(torch::equal(raw, expected));
  EXPECT_TRUE(torch::equal(packed, expected));
}

TEST_F(Idx, ReadsBigEndianWiderTypes) {
  write_bytes(dir_ / "i32", {0, 0, 0x0C, 1, 0, 0, 0, 2, 0, 0, 1, 2, 0xff, 0xff, 0xff, 0xfe});
  EXPECT_TRUE(torch::equal(read_idx(dir_ / "i32"), torch::tensor({258, -2}, torch::kInt32)));
  write_bytes(dir_ / "i16", {0, 0, 0x0B, 2, 0, 0, 0, 1, 0, 0, 0, 2, 0x80, 0x00, 0x01, 0x02});
  EXPECT_TRUE(torch::equal(read_idx(dir_ / "i16"),
                           torch::tensor({-32768, 258}, torch::kInt16).view({1, 2})));
  write_bytes(dir_ / "i8", {0, 0, 0x09, 1, 0, 0, 0, 2, 0xff, 0x05});
  EXPECT_TRUE(torch::equal(read_idx(dir_ / "i8"), torch::tensor({-1, 5}, torch::kInt8)));
  // 1.5f is 0x3FC00000 and -2.0 is 0xC000000000000000.
  write_bytes(dir_ / "f32", {0, 0, 0x0D, 1, 0, 0, 0, 1, 0x3f, 0xc0, 0, 0});
  EXPECT_TRUE(torch::equal(read_idx(dir_ / "f32"), torch::tensor({1.5f})));
  write_bytes(dir_ / "f64", {0, 0, 0x0E, 1, 0, 0, 0, 1, 0xc0, 0, 0, 0, 0, 0, 0, 0});
  gzip(dir_ / "f64", dir_ / "f64.gz");
  EXPECT_TRUE(torch::equal(read_idx(dir_ / "f64.gz"), torch::tensor({-2.0}, torch::kFloat64)));
}

TEST_F(Idx, ReportsMalformedFilesWithTheirPath) {
  const auto path = dir_ / "bad";
  auto read = [&] { read_idx(path); };
  expect_input_error(read, path, "no such file");
  std::ofstream(path, std::ios::binary) << "PK\x03\x04zipdata";
  expect_input_error(read, path, "IDX magic 0x504b0304, expected 0x0000TTNN");
  write_bytes(path, {0, 0, 0x07, 1, 0, 0, 0, 1, 0});
  expect_input_error(read, path, "type byte 0x07, expected 0x08 (uint8)");
  write_bytes(path, {0, 0, 0x08, 0});
  expect_input_error(read, path, "declares 0 dimensions");
  write_bytes(path, {0, 0});
  expect_input_error(read, path, "too short");
  write_bytes(path, {0, 0, 0x08, 3, 0, 0, 0, 1});
  expect_input_error(read, path, "truncated IDX header");
  testing::write_idx_u8(path, {0, 2}, {});
  expect_input_error(read, path, "dimension 0 is 0");
  testing::write_idx_u8(path, {4, 4}, std::vector<unsigned char>(10));
  expect_input_error(read, path, "truncated: shape [4, 4] of uint8 needs 16 data bytes");
  testing::write_idx_u8(path, {0xffffffff, 0xffffffff, 0xffffffff}, std::vector<unsigned char>(8));
  expect_input_error(read, path, "truncated");
  testing::write_idx_u8(path, {2, 2}, std::vector<unsigned char>(6));
  expect_input_error(read, path, "2 unexpected bytes after the data");
  std::filesystem::create_directory(dir_ / "a_directory");
  expect_input_error([&] { read_idx(dir_ / "a_directory"); }, dir_ / "a_directory",
                     "not a regular file");
}

TEST_F(Idx, ReportsTruncatedAndPaddedGzip) {
  testing::write_idx_u8(dir_ / "full", {64, 64}, std::vector<unsigned char>(4096, 3));
  gzip(dir_ / "full", dir_ / "full.gz");
  const auto gz = testing::read_text(dir_ / "full.gz");
  const auto cut = dir_ / "cut.gz";
  std::ofstream(cut, std::ios::binary) << gz.substr(0, gz.size() / 2);
  expect_input_error([&] { read_idx(cut); }, cut, "cannot decompress");
  testing::write_idx_u8(dir_ / "long", {2, 2}, std::vector<unsigned char>(5));
  gzip(dir_ / "long", dir_ / "long.gz");
  expect_input_error([&] { read_idx(dir_ / "long.gz"); }, dir_ / "long.gz", "1 unexpected byte");
}

// The bad-input probe's gzip cases (issue 13): a bomb is not inflated past what the header
// declares, a header promising more than memory allows fails before any data is read, and
// bytes after the gzip stream are an error rather than ignored.
TEST_F(Idx, GzipIsReadOnlyAsFarAsTheHeaderDeclares) {
  // 4 bytes declared, 64 MiB of zeros in the stream (about 64 KiB compressed).
  testing::write_idx_u8(dir_ / "bomb", {4}, std::vector<unsigned char>(64 << 20));
  gzip(dir_ / "bomb", dir_ / "bomb.gz");
  expect_input_error([&] { read_idx(dir_ / "bomb.gz"); }, dir_ / "bomb.gz",
                     "at least 16777216 unexpected bytes after the data of shape [4]");

  testing::write_idx_u8(dir_ / "vast", {0xffffffff, 0xffffffff}, {});
  gzip(dir_ / "vast", dir_ / "vast.gz");
  expect_input_error([&] { read_idx(dir_ / "vast.gz"); }, dir_ / "vast.gz",
                     "shape [4294967295, 4294967295] of uint8 needs 18446744065119617025 data "
                     "bytes, more than the");

  // decode_idx's own limit: the header is refused before the data is touched.
  testing::write_idx_u8(dir_ / "limit", {2000}, std::vector<unsigned char>(2000, 1));
  const auto bytes = testing::read_text(dir_ / "limit");
  expect_input_error([&] { decode_idx(bytes, (dir_ / "limit").string(), 1000); }, dir_ / "limit",
                     "needs 2000 data bytes, more than the 1000 bytes of memory");
  EXPECT_EQ(decode_idx(bytes, "limit", 2000).data.size(), 2000u);
}

TEST_F(Idx, GarbageAfterTheGzipStreamIsAnErrorAndMembersConcatenate) {
  testing::write_idx_u8(dir_ / "small", {2, 2}, {1, 2, 3, 4});
  gzip(dir_ / "small", dir_ / "small.gz");
  const auto gz = testing::read_text(dir_ / "small.gz");
  std::ofstream(dir_ / "junk.gz", std::ios::binary) << gz << "junk";
  expect_input_error([&] { read_idx(dir_ / "junk.gz"); }, dir_ / "junk.gz",
                     "4 bytes after the end of the gzip stream");
  // A file split across two gzip members (what `cat a.gz b.gz` gives) reads as one.
  const auto raw = testing::read_text(dir_ / "small");
  std::ofstream(dir_ / "first", std::ios::binary) << raw.substr(0, 9);
  std::ofstream(dir_ / "second", std::ios::binary) << raw.substr(9);
  gzip(dir_ / "first", dir_ / "first.gz");
  gzip(dir_ / "second", dir_ / "second.gz");
  std::ofstream(dir_ / "two.gz", std::ios::binary)
      << testing::read_text(dir_ / "first.gz") << testing::read_text(dir_ / "second.gz");
  EXPECT_TRUE(torch::equal(read_idx(dir_ / "two.gz"),
                           torch::tensor({1, 2, 3, 4}, torch::kUInt8).view({2, 2})));
  // A damaged byte inside the stream fails its CRC or its structure.
  auto damaged = gz;
  damaged[damaged.size() - 6] = static_cast<char>(damaged[damaged.size() - 6] ^ 0x55);
  std::ofstream(dir_ / "damaged.gz", std::ios::binary) << damaged;
  expect_input_error([&] { read_idx(dir_ / "damaged.gz"); }, dir_ / "damaged.gz",
                     "cannot decompress");
}

TEST_F(Idx, PairsCheckTypesShapesAndCounts) {
  testing::write_idx_u8(dir_ / "images", {3, 2, 2}, std::vector<unsigned char>(12, 9));
  testing::write_idx_u8(dir_ / "labels", {3}, {0, 1, 2});
  testing::write_idx_u8(dir_ / "four_labels", {4}, {0, 1, 2, 3});
  testing::write_idx_u8(dir_ / "matrix_labels", {3, 1}, {0, 1, 2});
  write_bytes(dir_ / "int_images", {0, 0, 0x0C, 3, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 7});
  const auto pair = load_idx_pair(dir_ / "images", dir_ / "labels");
  EXPECT_EQ(pair.images.sizes(), (std::vector<int64_t>{3, 1, 2, 2}));
  EXPECT_EQ(pair.images.scalar_type(), torch::kUInt8);
  EXPECT_EQ(pair.labels.scalar_type(), torch::kInt64);
  EXPECT_TRUE(torch::equal(pair.labels, torch::tensor({0, 1, 2}, torch::kInt64)));

  expect_input_error([&] { load_idx_pair(dir_ / "images", dir_ / "four_labels"); },
                     dir_ / "four_labels", "4 labels for the 3 images");
  expect_input_error([&] { load_idx_pair(dir_ / "labels", dir_ / "labels"); }, dir_ / "labels",
                     "expected uint8 [N, H, W] or [N, H, W, C]");
  expect_input_error([&] { load_idx_pair(dir_ / "int_images", dir_ / "labels"); },
                     dir_ / "int_images", "type int32");
  expect_input_error([&] { load_idx_pair(dir_ / "images", dir_ / "matrix_labels"); },
                     dir_ / "matrix_labels", "expected uint8 [N]");
  expect_input_error([&] { load_idx_pair(dir_ / "images", dir_ / "missing"); }, dir_ / "missing",
                     "no such file");

  // [N, H, W, C] files are channel-last: pixel (n, y, x) holds channels c = 0, 1, 2.
  std::vector<unsigned char> rgb(3 * 2 * 2 * 3);
  for (size_t i = 0; i < rgb.size(); ++i) rgb[i] = static_cast<unsigned char>(i);
  testing::write_idx_u8(dir_ / "rgb", {3, 2, 2, 3}, rgb);
  const auto colour = load_idx_pair(dir_ / "rgb", dir_ / "labels").images;
  EXPECT_EQ(colour.sizes(), (std::vector<int64_t>{3, 3, 2, 2}));
  EXPECT_EQ(colour[1][2][1][0].item<int>(), (1 * 4 + 1 * 2 + 0) * 3 + 2);
}

TEST_F(Idx, FindsMnistNamesWithOrWithoutGz) {
  testing::write_toy_idx_dataset(dir_, 4, 4, 4);
  const auto raw = idx_paths_in(dir_);
  EXPECT_EQ(raw.train_images, dir_ / kMnistNames[0]);
  EXPECT_EQ(raw.train_labels, dir_ / kMnistNames[1]);
  EXPECT_EQ(raw.test_images, dir_ / kMnistNames[2]);
  EXPECT_EQ(raw.test_labels, dir_ / kMnistNames[3]);

  for (const auto* name : kMnistNames) {
    gzip(dir_ / name, dir_ / (std::string(name) + ".gz"));
    std::filesystem::remove(dir_ / name);
  }
  const auto packed = idx_paths_in(dir_);
  EXPECT_EQ(packed.train_images, dir_ / "train-images-idx3-ubyte.gz");
  EXPECT_EQ(packed.train_labels, dir_ / "train-labels-idx1-ubyte.gz");
  EXPECT_EQ(packed.test_images, dir_ / "t10k-images-idx3-ubyte.gz");
  EXPECT_EQ(packed.test_labels, dir_ / "t10k-labels-idx1-ubyte.gz");
  EXPECT_EQ(load_idx_pair(packed.train_images, packed.train_labels).images.sizes(),
            (std::vector<int64_t>{4, 1, 4, 4}));

  std::filesystem::remove(dir_ / "t10k-labels-idx1-ubyte.gz");
  expect_input_error([&] { idx_paths_in(dir_); }, dir_, "no t10k-labels-idx1-ubyte");
  expect_input_error([&] { idx_paths_in(dir_ / "absent"); }, dir_ / "absent",
                     "no such data directory");
}

TEST_F(Idx, ChannelMeanAndStdOfScaledPixels) {
  // Channel 0 is all 255 (mean 1, std 0); channel 1 alternates 0 and 255 (mean 0.5, std 0.5).
  auto images = torch::zeros({2, 2, 1, 2}, torch::kUInt8);
  images.select(1, 0).fill_(255);
  images.select(1, 1).select(2, 0).fill_(255);
  const auto [mean, std] = channel_mean_std(images);
  ASSERT_EQ(mean.size(), 2u);
  EXPECT_FLOAT_EQ(mean[0], 1.0f);
  EXPECT_FLOAT_EQ(std[0], 0.0f);
  EXPECT_FLOAT_EQ(mean[1], 0.5f);
  EXPECT_FLOAT_EQ(std[1], 0.5f);
}

TEST_F(Idx, FashionMnistTestSplitFromTheDebianPackage) {
  const std::filesystem::path dir = kDefaultFashionMnistDir;
  ASSERT_TRUE(std::filesystem::is_directory(dir))
      << dir << " is missing (Debian package dataset-fashion-mnist): run scripts/setup.sh";
  const auto paths = idx_paths_in(dir);
  const auto test = load_idx_pair(paths.test_images, paths.test_labels);
  EXPECT_EQ(test.images.sizes(), (std::vector<int64_t>{10000, 1, 28, 28}));
  EXPECT_EQ(test.images.scalar_type(), torch::kUInt8);
  EXPECT_EQ(test.labels.sizes(), (std::vector<int64_t>{10000}));
  EXPECT_EQ(test.labels.min().item<int64_t>(), 0);
  EXPECT_EQ(test.labels.max().item<int64_t>(), 9);
  const auto [mean, std] = channel_mean_std(test.images);
  ASSERT_EQ(mean.size(), 1u);
  EXPECT_NEAR(mean[0], 0.2860, 0.002);
  const auto exact = test.images.to(torch::kFloat64).div(255.0);
  EXPECT_NEAR(mean[0], exact.mean().item<double>(), 1e-6);
  EXPECT_NEAR(std[0], exact.std(/*unbiased=*/false).item<double>(), 1e-6);
}

}  // namespace
}  // namespace exfusion
