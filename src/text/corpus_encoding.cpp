// Corpus to token file (see corpus_encoding.h): documents read in order, tokenised a block at a
// time on the workers, written in order through one atomic file write.
#include "exfusion/text/corpus_encoding.h"

#include "exfusion/text/tokenizer.h"
#include "exfusion/util/atomic_file.h"
#include "exfusion/util/error.h"
#include "exfusion/util/index_threads.h"

namespace exfusion {

EncodedCorpus encode_corpus(const CorpusEncoding& encoding) {
  refuse_overwrite(encoding.out, encoding.force);
  const Tokenizer tokenizer(encoding.tokenizer, 0);
  if (tokenizer.pieces() - 1 > token_dtype_max(encoding.dtype)) {
    throw InputError("--dtype " + token_dtype_names().name_of(encoding.dtype) + ": the tokenizer " +
                     encoding.tokenizer.string() + " has " + std::to_string(tokenizer.pieces()) +
                     " pieces, more than it holds (use --dtype uint32)");
  }
  const auto files = expand_text_paths(encoding.corpus);
  EncodedCorpus encoded;
  encoded.files = static_cast<int64_t>(files.size());
  write_file_atomically(encoding.out, [&](std::ostream& out) {
    constexpr size_t kBlockDocuments = 256;
    std::vector<std::string> texts;
    std::vector<std::vector<int64_t>> ids;
    const auto flush = [&] {
      ids.assign(texts.size(), {});
      for_each_index_in_threads(static_cast<int64_t>(texts.size()), encoding.workers,
                                [&](int64_t i) {
                                  auto& document = ids[static_cast<size_t>(i)];
                                  document = tokenizer.encode(texts[static_cast<size_t>(i)]);
                                  document.push_back(tokenizer.eos_id());
                                });
      for (const auto& document : ids) {
        write_tokens(out, document, encoding.dtype, encoding.out.string());
        encoded.tokens += static_cast<int64_t>(document.size());
      }
      encoded.documents += static_cast<int64_t>(texts.size());
      texts.clear();
    };
    for (const auto& file : files) {
      TextFileReader reader(file, encoding.reading);
      while (auto document = reader.next()) {
        texts.push_back(std::move(document->text));
        if (texts.size() == kBlockDocuments) flush();
      }
      encoded.skipped += reader.skipped();
    }
    flush();
    if (encoded.documents == 0) {
      throw InputError("the corpus (" + std::to_string(files.size()) +
                       " files) holds no document to encode");
    }
  });
  return encoded;
}

}  // namespace exfusion
