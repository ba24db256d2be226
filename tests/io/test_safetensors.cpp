// safetensors: round trips of every dtype, the exact byte layout, every load error with
// the file named, atomic saves, architecture checks, and the fixtures that
// tests/io/test_safetensors_interop.py exchanges with the reference Python library.
#include <gtest/gtest.h>
#include <torch/cuda.h>

#include <cstdlib>
#include <fstream>

#include "../support/cli.h"
#include "exfusion/io/safetensors.h"
#include "exfusion/io/safetensors_header.h"
#include "exfusion/util/error.h"

namespace exfusion {
namespace {

namespace fs = std::filesystem;

// A fresh directory per test, removed afterwards, so tests never see each other's files.
class TempDir {
 public:
  TempDir()
      : path_(testing::fresh_temp_dir(
            std::string("safetensors-") +
            ::testing::UnitTest::GetInstance()->current_test_info()->name())) {}
  ~TempDir() { testing::remove_tree(path_); }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

std::string le64(uint64_t value) {
  std::string bytes(8, '\0');
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>((value >> (8 * i)) & 0xff);
  return bytes;
}

void write_bytes(const fs::path& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}

// A file with the given header text (length prefix computed) followed by `buffer`.
fs::path craft(const fs::path& dir, const std::string& header, const std::string& buffer) {
  const auto path = dir / "crafted.safetensors";
  write_bytes(path, le64(header.size()) + header + buffer);
  return path;
}

void expect_load_error(const fs::path& path, const std::string& phrase) {
  try {
    load_safetensors(path);
    ADD_FAILURE() << "loaded a bad file; expected an error containing: " << phrase;
  } catch (const InputError& error) {
    const std::string what = error.what();
    EXPECT_NE(what.find(path.string()), std::string::npos) << what;
    EXPECT_NE(what.find(phrase), std::string::npos) << "missing '" << phrase << "' in: " << what;
  }
}

std::string validate_error(const SafetensorsFile& file, const NamedTensors& expected) {
  try {
    validate_against(file, expected, "model.safetensors");
  } catch (const InputError& error) {
    return error.what();
  }
  return "";
}

void expect_same(const NamedTensors& expected, const SafetensorsFile& file) {
  ASSERT_EQ(file.tensors.size(), expected.size());
  for (const auto& [name, tensor] : expected) {
    ASSERT_EQ(file.tensors.count(name), 1u) << name;
    const auto& loaded = file.tensors.at(name);
    EXPECT_EQ(loaded.scalar_type(), tensor.scalar_type()) << name;
    EXPECT_EQ(loaded.sizes(), tensor.sizes()) << name;
    EXPECT_TRUE(loaded.device().is_cpu()) << name;
    EXPECT_TRUE(loaded.is_contiguous()) << name;
    EXPECT_TRUE(torch::equal(loaded, tensor.cpu())) << name;
  }
}

// Deterministic, exactly representable values; test_safetensors_interop.py builds the same
// tensors with the same formulas, so any change here must be made there too.
NamedTensors interop_tensors() {
  const auto f = [](int64_t n) { return torch::arange(n, torch::kFloat64); };
  const auto i = [](int64_t n) { return torch::arange(n, torch::kInt64); };
  return {{"f64", (f(12) / 8 - 0.5).reshape({3, 4})},
          {"f32", ((f(24) - 12) * 0.25).reshape({2, 3, 4}).to(torch::kFloat32)},
          {"f16", (f(10) * 0.5 - 2).to(torch::kFloat16)},
          {"bf16", (f(16) * 0.125 - 1).reshape({4, 4}).to(torch::kBFloat16)},
          {"i64", i(6) * 1000000007 - 3},
          {"i32", (i(8) - 4).to(torch::kInt32)},
          {"i16", (i(5) * 300 - 600).to(torch::kInt16)},
          {"i8", (i(10) * 25 - 125).to(torch::kInt8)},
          {"u8", i(256).reshape({16, 16}).to(torch::kUInt8)},
          {"bool", i(7) % 3 == 0},
          {"scalar", torch::scalar_tensor(2.5, torch::kFloat32)},
          {"empty", torch::zeros({0, 3}, torch::kFloat32)}};
}

const std::map<std::string, std::string> kInteropMetadata = {{"format", "pt"},
                                                             {"source", "exfusion interop"}};

TEST(Safetensors, RoundTripsEveryDtypeAndShape) {
  TempDir dir;
  NamedTensors tensors = {{"f64", torch::randn({2, 3}, torch::kFloat64)},
                          {"f32", torch::randn({4, 1})},
                          {"f16", torch::randn({3, 2}).to(torch::kHalf)},
                          {"bf16", torch::randn({5}).to(torch::kBFloat16)},
                          {"i64", torch::arange(6, torch::kInt64).view({2, 3}) - 3},
                          {"i32", torch::arange(3, torch::kInt32)},
                          {"i16", torch::arange(3, torch::kInt16)},
                          {"i8", torch::arange(-3, 3, torch::kInt8)},
                          {"u8", torch::arange(7, torch::kUInt8)},
                          {"bool", torch::tensor({true, false, true})},
                          {"scalar", torch::scalar_tensor(3.5)},
                          {"empty", torch::zeros({0, 4})},
                          {"empty_last", torch::zeros({2, 0}, torch::kInt64)},
                          {"transposed", torch::arange(12, torch::kFloat32).view({3, 4}).t()},
                          {"strided", torch::arange(10, torch::kInt32).slice(0, 0, 10, 3)},
                          {"grad", torch::ones({2}, torch::requires_grad())}};
  if (torch::cuda::is_available()) {
    tensors.emplace_back("cuda", torch::arange(5, torch::kFloat32).to(torch::kCUDA));
  }
  ASSERT_FALSE(tensors[13].second.is_contiguous());
  const auto path = dir.path() / "all.safetensors";
  save_safetensors(path, tensors);
  const auto file = load_safetensors(path);
  expect_same(tensors, file);
  EXPECT_TRUE(file.metadata.empty());
}

TEST(Safetensors, RoundTripsMetadata) {
  TempDir dir;
  const auto path = dir.path() / "meta.safetensors";
  const std::map<std::string, std::string> metadata = {
      {"config", R"({"depth": 2, "name": "vit"})"}, {"empty", ""}, {"unicode", "ü→✓"}};
  save_safetensors(path, {{"w", torch::ones({2})}}, metadata);
  EXPECT_EQ(load_safetensors(path).metadata, metadata);
}

TEST(Safetensors, WritesTheExactByteLayout) {
  TempDir dir;
  const auto path = dir.path() / "layout.safetensors";
  // "b" before "a": the layout follows the given order, not the names.
  save_safetensors(path, {{"b", torch::tensor({int8_t{7}})}, {"a", torch::tensor({1.0f, 2.0f})}},
                   {{"k", "v"}});
  const std::string header = R"({"__metadata__":{"k":"v"},)"
                             R"("b":{"dtype":"I8","shape":[1],"data_offsets":[0,1]},)"
                             R"("a":{"dtype":"F32","shape":[2],"data_offsets":[1,9]}})"
                             "     ";  // 131 bytes of JSON padded to 136
  const std::string length("\x88\0\0\0\0\0\0\0", 8);
  const std::string data(
      "\x07"
      "\x00\x00\x80\x3f"   // 1.0f, little-endian
      "\x00\x00\x00\x40",  // 2.0f
      9);
  ASSERT_EQ(header.size(), 136u);
  EXPECT_EQ(testing::read_text(path), length + header + data);
}

TEST(Safetensors, LoadsAnEmptyFileWithPaddingAndNullMetadata) {
  TempDir dir;
  const auto file = load_safetensors(craft(dir.path(), R"({"__metadata__":null}   )", ""));
  EXPECT_TRUE(file.tensors.empty());
  EXPECT_TRUE(file.metadata.empty());
}

TEST(Safetensors, RejectsMissingAndTooShortFiles) {
  TempDir dir;
  expect_load_error(dir.path() / "absent.safetensors", "no such file");
  expect_load_error(dir.path(), "not a regular file");
  const auto short_file = dir.path() / "short.safetensors";
  write_bytes(short_file, "abc");
  expect_load_error(short_file, "too short");
}

TEST(Safetensors, RejectsHeaderLengthBeyondTheFile) {
  TempDir dir;
  const auto path = dir.path() / "lying.safetensors";
  write_bytes(path, le64(100) + "{}");
  expect_load_error(path, "header length 100 exceeds the file size 10");
  write_bytes(path, std::string(8, '\xff') + "{}");
  expect_load_error(path, "exceeds the file size");
}

TEST(Safetensors, RejectsHeaderThatIsNotAJsonObject) {
  TempDir dir;
  expect_load_error(craft(dir.path(), R"({"x": )", ""), "not valid JSON");
  expect_load_error(craft(dir.path(), "[1, 2]", ""), "expected a JSON object");
}

TEST(Safetensors, RejectsMissingOrIllTypedFields) {
  TempDir dir;
  const auto& d = dir.path();
  expect_load_error(craft(d, R"({"x": 3})", ""), "tensor 'x': expected an object");
  expect_load_error(craft(d, R"({"x":{"shape":[1],"data_offsets":[0,4]}})", "1234"),
                    "tensor 'x': missing \"dtype\"");
  expect_load_error(craft(d, R"({"x":{"dtype":"F32","data_offsets":[0,4]}})", "1234"),
                    "tensor 'x': missing \"shape\"");
  expect_load_error(craft(d, R"({"x":{"dtype":"F32","shape":[1]}})", "1234"),
                    "tensor 'x': missing \"data_offsets\"");
  expect_load_error(craft(d, R"({"x":{"dtype":7,"shape":[1],"data_offsets":[0,4]}})", "1234"),
                    "\"dtype\" must be a string");
  expect_load_error(craft(d, R"({"x":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", "1234"),
                    "\"shape\" must be an array of non-negative integers");
  expect_load_error(craft(d, R"({"x":{"dtype":"F32","shape":"1","data_offsets":[0,4]}})", "1234"),
                    "\"shape\" must be an array");
  expect_load_error(craft(d, R"({"x":{"dtype":"F32","shape":[1],"data_offsets":[0]}})", "1234"),
                    "\"data_offsets\" must be [begin, end]");
  expect_load_error(craft(d, R"({"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4.0]}})", "1234"),
                    "\"data_offsets\" must be [begin, end]");
}

TEST(Safetensors, RejectsUnknownDtype) {
  TempDir dir;
  expect_load_error(
      craft(dir.path(), R"({"x":{"dtype":"Q4","shape":[1],"data_offsets":[0,1]}})", "a"),
      "tensor 'x': unsupported dtype \"Q4\"");
}

TEST(Safetensors, RejectsOffsetsOutOfRange) {
  TempDir dir;
  const auto& d = dir.path();
  expect_load_error(craft(d, R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", "1234"),
                    "tensor 'x': data_offsets [0, 8] outside the 4-byte data buffer");
  expect_load_error(craft(d, R"({"x":{"dtype":"U8","shape":[0],"data_offsets":[4,2]}})", "1234"),
                    "end before begin");
}

TEST(Safetensors, RejectsByteSizeNotMatchingTheShape) {
  TempDir dir;
  const auto& d = dir.path();
  expect_load_error(craft(d, R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}})", "1234"),
                    "tensor 'x': data_offsets [0, 4] span 4 bytes, expected 8 for F32 shape [2]");
  expect_load_error(
      craft(d, R"({"x":{"dtype":"F64","shape":[4294967296,4294967296],"data_offsets":[0,0]}})", ""),
      "is too large");
}

TEST(Safetensors, RejectsOverlappingTensors) {
  TempDir dir;
  expect_load_error(craft(dir.path(),
                          R"({"x":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},)"
                          R"("y":{"dtype":"U8","shape":[2],"data_offsets":[1,3]}})",
                          "123"),
                    "tensors 'x' and 'y' overlap");
}

TEST(Safetensors, RejectsBytesNoTensorCovers) {
  TempDir dir;
  const auto& d = dir.path();
  expect_load_error(craft(d, R"({"x":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}})", "1234"),
                    "2 trailing bytes");
  expect_load_error(craft(d, R"({"x":{"dtype":"U8","shape":[2],"data_offsets":[2,4]}})", "1234"),
                    "bytes [0, 2) belong to no tensor");
}

TEST(Safetensors, RejectsNonStringMetadata) {
  TempDir dir;
  expect_load_error(craft(dir.path(), R"({"__metadata__":{"k":1}})", ""),
                    "__metadata__.k must be a string");
  expect_load_error(craft(dir.path(), R"({"__metadata__":["k"]})", ""),
                    "__metadata__ must be an object");
}

TEST(Safetensors, RejectsBoolBytesOtherThanZeroOrOne) {
  TempDir dir;
  expect_load_error(craft(dir.path(), R"({"x":{"dtype":"BOOL","shape":[2],"data_offsets":[0,2]}})",
                          std::string("\x01\x02", 2)),
                    "BOOL values must be 0 or 1");
}

TEST(Safetensors, SaveRejectsBadNamesAndDtypes) {
  TempDir dir;
  const auto path = dir.path() / "bad.safetensors";
  const auto expect_save_error = [&](const NamedTensors& tensors, const std::string& phrase) {
    try {
      save_safetensors(path, tensors);
      ADD_FAILURE() << "saved; expected an error containing: " << phrase;
    } catch (const InputError& error) {
      const std::string what = error.what();
      EXPECT_NE(what.find(path.string()), std::string::npos) << what;
      EXPECT_NE(what.find(phrase), std::string::npos) << what;
    }
  };
  expect_save_error({{"a", torch::ones({2})}, {"a", torch::zeros({2})}},
                    "duplicate tensor name 'a'");
  expect_save_error({{"a", torch::ones({2})}, {"", torch::ones({2})}},
                    "tensor #1 has an empty name");
  expect_save_error({{"__metadata__", torch::ones({2})}}, "reserved");
  expect_save_error({{"c", torch::ones({2}, torch::kComplexFloat)}}, "tensor 'c' has dtype");
  expect_save_error({{"u", torch::ones({2}, torch::kUInt32)}}, "tensor 'u' has dtype");
  EXPECT_FALSE(fs::exists(path));
}

TEST(Safetensors, FailedSaveLeavesNoFileAndKeepsAnExistingOne) {
  TempDir dir;
  const auto fresh = dir.path() / "fresh.safetensors";
  EXPECT_THROW(save_safetensors(fresh, {{"a", torch::ones({2})}, {"a", torch::zeros({2})}}),
               InputError);
  EXPECT_FALSE(fs::exists(fresh));

  const auto existing = dir.path() / "keep.safetensors";
  save_safetensors(existing, {{"a", torch::ones({2})}});
  const auto before = testing::read_text(existing);
  EXPECT_THROW(save_safetensors(existing, {{"a", torch::ones({2})}, {"a", torch::zeros({2})}}),
               InputError);
  EXPECT_THROW(save_safetensors(existing, {{"c", torch::ones({2}, torch::kComplexFloat)}}),
               InputError);
  EXPECT_EQ(testing::read_text(existing), before);
  EXPECT_TRUE(testing::temp_files_in(dir.path()).empty());
  EXPECT_EQ(std::distance(fs::directory_iterator(dir.path()), fs::directory_iterator()), 1);
}

TEST(Safetensors, ValidateAgainstAcceptsAMatchingFile) {
  SafetensorsFile file;
  file.tensors = {{"w", torch::zeros({4, 2})}, {"b", torch::zeros({4})}};
  EXPECT_EQ(validate_error(file, {{"b", torch::ones({4})}, {"w", torch::ones({4, 2})}}), "");
}

TEST(Safetensors, ValidateAgainstListsMissingUnexpectedAndShapes) {
  SafetensorsFile file;
  file.tensors = {{"blocks.0.mlp.fc1.weight", torch::zeros({4, 256, 64})},
                  {"extra", torch::zeros({1})}};
  const auto what = validate_error(file, {{"blocks.0.mlp.fc1.weight", torch::zeros({256, 64})},
                                          {"head.bias", torch::zeros({10})}});
  EXPECT_NE(what.find("model.safetensors: checkpoint does not match"), std::string::npos) << what;
  EXPECT_NE(what.find("blocks.0.mlp.fc1.weight: shape [4, 256, 64] in file, expected [256, 64]"),
            std::string::npos)
      << what;
  EXPECT_NE(what.find("head.bias: missing from the file"), std::string::npos) << what;
  EXPECT_NE(what.find("extra: unexpected"), std::string::npos) << what;
  EXPECT_EQ(what.find("more"), std::string::npos) << what;
}

TEST(Safetensors, ValidateAgainstRejectsAnotherDtype) {
  SafetensorsFile file;
  file.tensors = {{"w", torch::zeros({4, 2}, torch::kInt32)}};
  const auto what = validate_error(file, {{"w", torch::zeros({4, 2})}});
  EXPECT_NE(what.find("w: dtype I32 in file, expected F32"), std::string::npos) << what;
}

// The classes of bad headers the bad-input probe found (issue 13): each is an InputError
// naming the file, never a crash, a hang or an allocation the file does not justify.
TEST(Safetensors, RejectsNestingDeeperThanTheLimitAnywhere) {
  TempDir dir;
  const std::string deep = std::string(100000, '[') + std::string(100000, ']');
  expect_load_error(craft(dir.path(), R"({"x": )" + deep + "}", ""), "nested deeper than 64");
  expect_load_error(craft(dir.path(), R"({"x": {"dtype": )" + deep + "}}", ""),
                    "nested deeper than 64");
  expect_load_error(craft(dir.path(), R"({"__metadata__": {"a": )" + deep + "}}", ""),
                    "nested deeper than 64 levels at __metadata__.a");
}

TEST(Safetensors, RejectsDuplicateNamesAndNulBytes) {
  TempDir dir;
  const std::string entry = R"({"dtype": "U8", "shape": [1], "data_offsets": [0, 1]})";
  expect_load_error(craft(dir.path(), R"({"a": )" + entry + R"(, "a": )" + entry + "}", "x"),
                    "duplicate key 'a'");
  // The reference implementation rejects trailing NULs; nlohmann alone would stop at the first.
  expect_load_error(craft(dir.path(), std::string("{}\0\0\0\0\0\0", 8), ""),
                    "a NUL byte at offset 2");
}

TEST(Safetensors, RejectsShapesWhoseElementCountOverflows) {
  TempDir dir;
  // Zero bytes in all, but LibTorch's strides for [0, 2^62, 2^62] overflow int64.
  expect_load_error(craft(dir.path(),
                          R"({"t": {"dtype": "F32", "shape": [0, 4611686018427387904, )"
                          R"(4611686018427387904], "data_offsets": [0, 0]}})",
                          ""),
                    "tensor 't': shape [0,4611686018427387904,4611686018427387904] is too large");
  expect_load_error(craft(dir.path(),
                          R"({"t": {"dtype": "F64", "shape": [0, 2305843009213693952], )"
                          R"("data_offsets": [0, 0]}})",
                          ""),
                    "is too large");
}

TEST(Safetensors, RejectsAHeaderLongerThanTheLimit) {
  TempDir dir;
  const auto path = dir.path() / "huge-header.safetensors";
  write_bytes(path, le64(kMaxSafetensorsHeaderBytes + 1));
  fs::resize_file(path, kMaxSafetensorsHeaderBytes + 16);  // sparse: no real 100 MB written
  expect_load_error(path, "header length 100000001 exceeds the 100000000-byte limit");
}

TEST(Safetensors, QuotesHugeBadValuesBriefly) {
  TempDir dir;
  const auto path = craft(dir.path(),
                          R"({"t": {"dtype": ")" + std::string(1000000, 'Q') +
                              R"(", "shape": [1], "data_offsets": [0, 1]}})",
                          "x");
  try {
    load_safetensors(path);
    ADD_FAILURE() << "loaded a bad file";
  } catch (const InputError& error) {
    const std::string what = error.what();
    EXPECT_NE(what.find("unsupported dtype \"QQQQ"), std::string::npos) << what.substr(0, 300);
    EXPECT_NE(what.find("(1000000 characters)"), std::string::npos) << what.substr(0, 300);
    EXPECT_LT(what.size(), 400u);
  }
}

TEST(Safetensors, ValidateAgainstListsAtMostTen) {
  SafetensorsFile file;
  NamedTensors expected;
  for (int i = 0; i < 13; ++i) expected.emplace_back("t" + std::to_string(i), torch::zeros({1}));
  const auto what = validate_error(file, expected);
  EXPECT_NE(what.find("(13 differences)"), std::string::npos) << what;
  EXPECT_NE(what.find("t9: missing"), std::string::npos) << what;
  EXPECT_EQ(what.find("t10: missing"), std::string::npos) << what;
  EXPECT_NE(what.find("and 3 more"), std::string::npos) << what;
}

// With EXFUSION_INTEROP_DIR set (by test_safetensors_interop.py) the file is left there
// for the Python library to read; otherwise it only round-trips through our own reader.
TEST(Safetensors, WritesInteropFixture) {
  TempDir dir;
  const char* interop_dir = std::getenv("EXFUSION_INTEROP_DIR");
  const auto path = fs::path(interop_dir ? interop_dir : dir.path()) / "cpp_written.safetensors";
  save_safetensors(path, interop_tensors(), kInteropMetadata);
  const auto file = load_safetensors(path);
  expect_same(interop_tensors(), file);
  EXPECT_EQ(file.metadata, kInteropMetadata);
}

// With EXFUSION_INTEROP_DIR set the file was written by the Python library; otherwise we
// write it ourselves so the checks below still run.
TEST(Safetensors, ReadsInteropFixture) {
  TempDir dir;
  const char* interop_dir = std::getenv("EXFUSION_INTEROP_DIR");
  const auto path = fs::path(interop_dir ? interop_dir : dir.path()) / "py_written.safetensors";
  if (!interop_dir) save_safetensors(path, interop_tensors(), kInteropMetadata);
  const auto file = load_safetensors(path);
  expect_same(interop_tensors(), file);
  EXPECT_EQ(file.metadata, kInteropMetadata);
}

}  // namespace
}  // namespace exfusion
