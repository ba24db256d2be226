// Pre-tokenised corpora: a flat array of token ids, uint16 or uint32 little-endian, as nanoGPT
// writes its train.bin, each document followed by its EOS (`exfusion tokenizer encode` writes
// them). Read a block at a time, never whole; an id beyond the vocabulary is an InputError
// naming the file and position, or, with skip_bad_records, its block is skipped and counted.
// Torch-free.
#pragma once
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include "exfusion/config/fields.h"

namespace exfusion {

enum class TokenDtype { kUint16, kUint32 };

const config::Choices<TokenDtype>& token_dtype_names();  // uint16, uint32
int64_t token_dtype_size(TokenDtype dtype);
// The largest id a file of `dtype` can hold.
int64_t token_dtype_max(TokenDtype dtype);

struct TokenFileOptions {
  TokenDtype dtype = TokenDtype::kUint16;
  int64_t block_tokens = 512;  // tokens per block that next() returns
  int64_t vocabulary = 0;      // ids must be below it (0: any id the dtype holds)
  bool skip_bad_records = false;
};

// One token file's blocks, in order.
class TokenFileReader {
 public:
  // InputError naming the file when it cannot be opened or is not a whole number of tokens.
  TokenFileReader(std::filesystem::path file, TokenFileOptions options);

  // The next block of block_tokens ids (the file's last may be shorter); nullopt at the end.
  std::optional<std::vector<int64_t>> next();
  int64_t skipped() const { return skipped_; }  // blocks with a bad id (skip_bad_records)

 private:
  std::filesystem::path file_;
  TokenFileOptions options_;
  std::ifstream in_;
  int64_t tokens_ = 0;  // in the file
  int64_t read_ = 0;    // tokens read so far
  int64_t skipped_ = 0;
  std::vector<unsigned char> bytes_;
};

// Appends token ids to a stream in `dtype`'s little-endian layout; InputError (naming `where`)
// for an id the dtype cannot hold.
void write_tokens(std::ostream& out, const std::vector<int64_t>& ids, TokenDtype dtype,
                  const std::string& where);

}  // namespace exfusion
