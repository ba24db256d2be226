// Token files (see token_file.h): a block of ids per read, bounds-checked as they are read.
#include "exfusion/text/token_file.h"

#include "exfusion/util/error.h"

namespace exfusion {
namespace fs = std::filesystem;

const config::Choices<TokenDtype>& token_dtype_names() {
  static const config::Choices<TokenDtype> names{
      {{"uint16", TokenDtype::kUint16}, {"uint32", TokenDtype::kUint32}}};
  return names;
}

int64_t token_dtype_size(TokenDtype dtype) { return dtype == TokenDtype::kUint16 ? 2 : 4; }

int64_t token_dtype_max(TokenDtype dtype) {
  return dtype == TokenDtype::kUint16 ? 0xffff : int64_t{0xffffffff};
}

TokenFileReader::TokenFileReader(fs::path file, TokenFileOptions options)
    : file_(std::move(file)), options_(options) {
  std::error_code error;
  const auto bytes = fs::file_size(file_, error);
  if (error) throw InputError(file_.string() + ": cannot read it (" + error.message() + ")");
  const auto size = token_dtype_size(options_.dtype);
  if (bytes % static_cast<uint64_t>(size) != 0) {
    throw InputError(file_.string() + ": " + std::to_string(bytes) +
                     " bytes is not a whole number of " +
                     token_dtype_names().name_of(options_.dtype) +
                     " tokens (data.token_dtype names the file's type)");
  }
  in_.open(file_, std::ios::binary);
  if (!in_) throw InputError(file_.string() + ": cannot open it");
  tokens_ = static_cast<int64_t>(bytes) / size;
}

std::optional<std::vector<int64_t>> TokenFileReader::next() {
  const auto size = token_dtype_size(options_.dtype);
  while (read_ < tokens_) {
    const auto count = std::min(options_.block_tokens, tokens_ - read_);
    bytes_.resize(static_cast<size_t>(count * size));
    if (!in_.read(reinterpret_cast<char*>(bytes_.data()),
                  static_cast<std::streamsize>(bytes_.size()))) {
      throw InputError(file_.string() + ": the file ended early (it changed while read?)");
    }
    const auto first = read_;
    read_ += count;
    std::vector<int64_t> ids(static_cast<size_t>(count));
    bool bad = false;
    for (int64_t i = 0; i < count; ++i) {
      const auto* at = bytes_.data() + i * size;
      int64_t id = at[0] | (at[1] << 8);
      if (size == 4) id |= (int64_t{at[2]} << 16) | (int64_t{at[3]} << 24);
      if (options_.vocabulary > 0 && id >= options_.vocabulary) {
        if (!options_.skip_bad_records) {
          throw InputError(file_.string() + ": token " + std::to_string(first + i) + " is id " +
                           std::to_string(id) + ", not below the tokenizer's " +
                           std::to_string(options_.vocabulary) +
                           " ids (another tokenizer's file, or data.token_dtype wrong?)");
        }
        bad = true;
        break;
      }
      ids[static_cast<size_t>(i)] = id;
    }
    if (!bad) return ids;
    ++skipped_;
  }
  return std::nullopt;
}

void write_tokens(std::ostream& out, const std::vector<int64_t>& ids, TokenDtype dtype,
                  const std::string& where) {
  const auto size = token_dtype_size(dtype);
  const auto max = token_dtype_max(dtype);
  std::vector<unsigned char> bytes(ids.size() * static_cast<size_t>(size));
  for (size_t i = 0; i < ids.size(); ++i) {
    const auto id = ids[i];
    if (id < 0 || id > max) {
      throw InputError(where + ": id " + std::to_string(id) + " does not fit " +
                       token_dtype_names().name_of(dtype) + " (use --dtype uint32)");
    }
    for (int64_t b = 0; b < size; ++b) {
      bytes[i * static_cast<size_t>(size) + static_cast<size_t>(b)] =
          static_cast<unsigned char>((id >> (8 * b)) & 0xff);
    }
  }
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
}

}  // namespace exfusion
