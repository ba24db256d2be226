// `exfusion tokenizer encode`: a corpus tokenised once into a token file (token_file.h), each
// document's ids followed by EOS as the text stream concatenates them, so that runs over a
// large corpus skip tokenising it again; the file is written to a temporary and renamed.
#pragma once
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "exfusion/text/text_reader.h"
#include "exfusion/text/token_file.h"

namespace exfusion {

struct CorpusEncoding {
  std::vector<std::string> corpus;  // files, folders or globs (text_reader.h), read in sorted order
  TextReaderOptions reading;
  std::filesystem::path tokenizer;  // a SentencePiece model
  TokenDtype dtype = TokenDtype::kUint16;
  int64_t workers = 1;  // tokenising threads
  std::filesystem::path out;
  bool force = false;  // replace an existing `out`
};

struct EncodedCorpus {
  int64_t files = 0;
  int64_t documents = 0;
  int64_t tokens = 0;   // EOS included
  int64_t skipped = 0;  // bad records (skip_bad_records)
};

// InputError (exit 2, nothing written) for an existing `out` without force, a dtype too small
// for the tokenizer's ids, or a corpus with no document.
EncodedCorpus encode_corpus(const CorpusEncoding& encoding);

}  // namespace exfusion
