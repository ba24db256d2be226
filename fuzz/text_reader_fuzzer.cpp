// Fuzz target: a corpus file's bytes (plain text or JSON Lines, raw or gzip) through the text
// reader in each document split, failing and skipping, and as a token file of each dtype.
// Rejections are InputErrors; every document returned must be non-empty, in plain text valid
// UTF-8, and every token block within its size with ids below the vocabulary.
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <string>

#include "exfusion/text/text_reader.h"
#include "exfusion/text/token_file.h"
#include "exfusion/util/error.h"

namespace {

// One file per process, rewritten for each input: the reader takes a path (it streams files).
const std::string& input_path() {
  static const std::string path = "/tmp/exfusion-text-fuzz-" + std::to_string(::getpid());
  return path;
}

void read_all(exfusion::TextFormat format, exfusion::DocumentSplit split, bool skip) {
  exfusion::TextReaderOptions options;
  options.format = format;
  options.documents = split;
  options.skip_bad_records = skip;
  options.max_line_bytes = 64;
  options.max_document_bytes = 256;
  try {
    exfusion::TextFileReader reader(input_path(), options);
    while (auto document = reader.next()) {
      if (document->text.empty()) std::abort();
      if (format == exfusion::TextFormat::kPlain && !exfusion::valid_utf8(document->text)) {
        std::abort();
      }
      if (document->text.size() > 256 && split != exfusion::DocumentSplit::kLine &&
          format == exfusion::TextFormat::kPlain) {
        std::abort();
      }
    }
  } catch (const exfusion::InputError&) {
    if (skip && format == exfusion::TextFormat::kPlain) std::abort();  // skipping never fails
  }
}

void read_tokens(exfusion::TokenDtype dtype, bool skip) {
  exfusion::TokenFileOptions options;
  options.dtype = dtype;
  options.block_tokens = 7;
  options.vocabulary = 1000;
  options.skip_bad_records = skip;
  try {
    exfusion::TokenFileReader reader(input_path(), options);
    while (auto block = reader.next()) {
      if (block->empty() || block->size() > 7) std::abort();
      for (const auto id : *block) {
        if (id < 0 || id >= 1000) std::abort();
      }
    }
  } catch (const exfusion::InputError&) {
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  {
    std::ofstream out(input_path(), std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  }
  for (const bool skip : {false, true}) {
    read_all(exfusion::TextFormat::kJsonLines, exfusion::DocumentSplit::kLine, skip);
    for (const auto split : {exfusion::DocumentSplit::kFile, exfusion::DocumentSplit::kBlankLine,
                             exfusion::DocumentSplit::kLine, exfusion::DocumentSplit::kSeparator}) {
      read_all(exfusion::TextFormat::kPlain, split, skip);
    }
    for (const auto dtype : {exfusion::TokenDtype::kUint16, exfusion::TokenDtype::kUint32}) {
      read_tokens(dtype, skip);
    }
  }
  return 0;
}
