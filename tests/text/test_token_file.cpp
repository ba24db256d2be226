// Token files: ids written and read back in both dtypes (little-endian, as numpy's tofile on
// x86 writes nanoGPT's .bin), blocks of the asked size with a shorter last one, and bad input:
// a size that is not a whole number of tokens, an id beyond the vocabulary (an error naming the
// file and position, or the block skipped and counted), an id the dtype cannot hold.
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "../support/cli.h"
#include "exfusion/text/text_reader.h"
#include "exfusion/text/token_file.h"
#include "exfusion/util/error.h"

namespace exfusion {
namespace {
namespace fs = std::filesystem;

fs::path write_token_file(const fs::path& path, const std::vector<int64_t>& ids, TokenDtype dtype) {
  std::ofstream out(path, std::ios::binary);
  write_tokens(out, ids, dtype, path.string());
  return path;
}

std::vector<std::vector<int64_t>> token_blocks(const fs::path& file,
                                               const TokenFileOptions& options,
                                               int64_t* skipped = nullptr) {
  TokenFileReader reader(file, options);
  std::vector<std::vector<int64_t>> blocks;
  while (auto block = reader.next()) blocks.push_back(*block);
  if (skipped != nullptr) *skipped = reader.skipped();
  return blocks;
}

class TokenFile : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = testing::fresh_temp_dir("token-file"); }
  void TearDown() override { testing::remove_tree(dir_); }
  fs::path dir_;
};

TEST_F(TokenFile, IdsRoundTripInBlocksInBothDtypes) {
  const std::vector<int64_t> ids{0, 1, 255, 256, 65535, 7, 300, 2};
  const auto u16 = write_token_file(dir_ / "a.bin", ids, TokenDtype::kUint16);
  // Little-endian, two bytes each: 256 is 00 01.
  const auto bytes = testing::read_text(u16);
  ASSERT_EQ(bytes.size(), 16U);
  EXPECT_EQ(static_cast<unsigned char>(bytes[6]), 0x00);
  EXPECT_EQ(static_cast<unsigned char>(bytes[7]), 0x01);
  TokenFileOptions options;
  options.block_tokens = 3;
  EXPECT_EQ(token_blocks(u16, options),
            (std::vector<std::vector<int64_t>>{{0, 1, 255}, {256, 65535, 7}, {300, 2}}));

  const std::vector<int64_t> wide{70000, 1, 4000000000};
  const auto u32 = write_token_file(dir_ / "b.bin", wide, TokenDtype::kUint32);
  EXPECT_EQ(fs::file_size(u32), 12U);
  options.dtype = TokenDtype::kUint32;
  options.block_tokens = 8;
  EXPECT_EQ(token_blocks(u32, options), (std::vector<std::vector<int64_t>>{wide}));
  EXPECT_EQ(text_format_of(u32, TextReaderOptions{}), TextFormat::kTokens);
}

TEST_F(TokenFile, BadFilesAreNamedOrTheirBlocksSkipped) {
  std::ofstream(dir_ / "odd.bin", std::ios::binary) << "abc";
  try {
    TokenFileReader reader(dir_ / "odd.bin", TokenFileOptions{});
    FAIL() << "read a file of 3 bytes as uint16 tokens";
  } catch (const InputError& error) {
    EXPECT_NE(std::string(error.what()).find("odd.bin: 3 bytes is not a whole number of uint16"),
              std::string::npos)
        << error.what();
  }

  const auto file =
      write_token_file(dir_ / "ids.bin", {1, 2, 3, 4, 900, 6, 7, 8, 9}, TokenDtype::kUint16);
  TokenFileOptions options;
  options.block_tokens = 3;
  options.vocabulary = 500;
  try {
    token_blocks(file, options);
    FAIL() << "read id 900 with a vocabulary of 500";
  } catch (const InputError& error) {
    EXPECT_NE(std::string(error.what())
                  .find("ids.bin: token 4 is id 900, not below the "
                        "tokenizer's 500 ids"),
              std::string::npos)
        << error.what();
  }
  options.skip_bad_records = true;
  int64_t skipped = 0;
  EXPECT_EQ(token_blocks(file, options, &skipped),
            (std::vector<std::vector<int64_t>>{{1, 2, 3}, {7, 8, 9}}));
  EXPECT_EQ(skipped, 1);

  std::ostringstream sink;
  EXPECT_THROW(write_tokens(sink, {65536}, TokenDtype::kUint16, "out.bin"), InputError);
  EXPECT_THROW(write_tokens(sink, {-1}, TokenDtype::kUint32, "out.bin"), InputError);
  EXPECT_THROW(TokenFileReader(dir_ / "missing.bin", TokenFileOptions{}), InputError);
}

}  // namespace
}  // namespace exfusion
