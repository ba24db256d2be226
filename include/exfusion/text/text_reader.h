// Documents from text corpora as users have them: plain text files (a document per file, per
// blank-line-separated paragraph, per line, or between separator lines such as fortune's "%")
// and JSON Lines with a text field (C4's `c4-train.00000-of-01024.json.gz`), gzip or not,
// streamed a bounded line at a time so a shard of any size is never loaded whole. A line over
// the cap, invalid UTF-8, a record without its field or a broken gzip stream is an InputError
// naming the file and line, or, with skip_bad_records, skipped and counted. Torch-free: the
// fuzz target links it on its own.
#pragma once
#include <zlib.h>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace exfusion {

// kTokens: ids already tokenised (token_file.h), which TextFileReader does not read.
enum class TextFormat { kAuto, kPlain, kJsonLines, kTokens };
enum class DocumentSplit { kFile, kBlankLine, kLine, kSeparator };

struct TextReaderOptions {
  TextFormat format = TextFormat::kAuto;  // auto: .jsonl/.json (.gz) JSON Lines, .bin tokens
  std::string text_field = "text";        // JSON Lines: the record's key holding the document
  DocumentSplit documents = DocumentSplit::kBlankLine;  // plain text only
  std::string separator = "%";           // kSeparator: the line between two documents
  int64_t max_line_bytes = 1 << 20;      // a longer line (or JSON record) is bad input
  int64_t max_document_bytes = 1 << 26;  // a longer plain-text document is bad input
  bool skip_bad_records = false;         // skip (and count) bad records instead of failing
};

// The format `file` is read in: `options.format`, or for kAuto its name's.
TextFormat text_format_of(const std::filesystem::path& file, const TextReaderOptions& options);

// Whether `text` is well-formed UTF-8 (no overlong forms, surrogates or values past U+10FFFF).
bool valid_utf8(std::string_view text);

// Each of `patterns` (a file, a folder searched recursively, or a glob) as the sorted files it
// names; InputError naming a pattern that matches nothing.
std::vector<std::filesystem::path> expand_text_paths(const std::vector<std::string>& patterns);

struct TextDocument {
  std::string text;
  int64_t line = 0;  // the line it starts on, from 1
};

// One file's documents, in order.
class TextFileReader {
 public:
  TextFileReader(std::filesystem::path file, TextReaderOptions options);
  ~TextFileReader();
  TextFileReader(const TextFileReader&) = delete;
  TextFileReader& operator=(const TextFileReader&) = delete;

  // The next document (never empty), or nullopt at the end of the file.
  std::optional<TextDocument> next();
  // Bad records skipped so far (skip_bad_records).
  int64_t skipped() const { return skipped_; }
  const std::filesystem::path& file() const { return file_; }

 private:
  // The next line without its newline; nullopt at the end. Throws for a broken stream.
  std::optional<std::string> read_line();
  // A bad record: InputError "<file>:<line>: <problem>", or counted when skipping.
  void bad_record(int64_t line, const std::string& problem);
  std::optional<TextDocument> next_json_record();
  std::optional<TextDocument> next_plain_document();

  std::filesystem::path file_;
  TextReaderOptions options_;
  TextFormat format_;
  gzFile stream_ = nullptr;
  std::string buffer_;  // read but not yet returned as lines
  size_t buffer_start_ = 0;
  bool at_end_ = false;
  bool last_line_bad_ = false;  // the line read_line returned last was over the cap
  int64_t line_ = 0;            // lines returned so far
  int64_t skipped_ = 0;
};

}  // namespace exfusion
