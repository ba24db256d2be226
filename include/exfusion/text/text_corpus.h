// The data section the language tasks share: where the corpus lies (plain text or JSON Lines,
// gzip or not, or token files already tokenised), how its files split into documents, the
// tokenizer, the held-out share, and the stream of raw token chunks the tasks cut their samples
// from. The stream is deterministic: files in a per-(seed, pass) order, documents tokenised
// (by `workers` threads, a block of documents at a time, which changes nothing but the speed)
// with EOS after each, concatenated and cut into chunks, which pass through a seeded shuffle
// buffer; a held-out document (a block of a token file) is chosen by its (file, position)
// alone, so training and validation never share one.
#pragma once
#include <cstdint>
#include <deque>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "exfusion/config/fields.h"
#include "exfusion/data/sample_random.h"
#include "exfusion/text/text_reader.h"
#include "exfusion/text/token_file.h"
#include "exfusion/text/tokenizer.h"

namespace exfusion {

const config::Choices<TextFormat>& text_format_names();        // auto, text, jsonl, tokens
const config::Choices<DocumentSplit>& document_split_names();  // file, blank_line, line, separator

struct TextCorpusOptions {
  std::string train;       // a file, a folder or a glob ({a,b} alternatives allowed)
  std::string validation;  // the same; empty: validation_share of train's documents
  double validation_share = 0.01;
  int64_t validation_samples = 256;  // at most this many validation samples (the first ones)
  int64_t samples_per_epoch = 0;     // 0: counted by one pass over the corpus when it opens
  TextFormat format = TextFormat::kAuto;
  std::string text_field = "text";
  TokenDtype token_dtype = TokenDtype::kUint16;
  DocumentSplit documents = DocumentSplit::kBlankLine;
  std::string separator = "%";
  std::string tokenizer;    // a SentencePiece model (exfusion tokenizer train writes one)
  int64_t extra_ids = 100;  // sentinels after the tokenizer's pieces (T5: 100)
  int64_t max_line_bytes = 1 << 20;
  bool skip_bad_records = false;
  int64_t shuffle_buffer = 1024;  // chunks the training order is shuffled within
  int64_t prefetch = 4;           // batches prepared ahead on the loader's thread
  int64_t workers = 1;            // tokenising threads (the loader's thread among them)

  template <class Fields>
  void fields(Fields& f) {
    f("train", train, "the training corpus: a file, a folder or a glob (C4: c4/en/c4-train.*)");
    f("validation", validation,
      "validation files (file, folder, glob); empty: validation_share of train's documents");
    f("validation_share", validation_share, "documents held out of train when validation is empty",
      config::Check<double>{"a share in [0, 0.5]", [](double v) { return v >= 0 && v <= 0.5; }});
    f("validation_samples", validation_samples, "validation samples at most (the first ones)",
      config::in_range<int64_t>(1, 1 << 24));
    f("samples_per_epoch", samples_per_epoch,
      "training samples per epoch; 0: counted with one pass over the corpus (set it for C4)",
      config::in_range<int64_t>(0, int64_t{1} << 40));
    f("format", format,
      "auto (by the file name: .jsonl/.json[.gz] JSON Lines, .bin tokens), text, jsonl, tokens",
      text_format_names());
    f("text_field", text_field, "JSON Lines: the key of each record's text (C4: text)");
    f("token_dtype", token_dtype,
      "token files: uint16 (nanoGPT's .bin) or uint32 (vocabularies past 65536)",
      token_dtype_names());
    f("documents", documents,
      "plain text: a document per file, per blank-line paragraph, per line, or between "
      "separator lines",
      document_split_names());
    f("separator", separator, "documents: separator: the line between documents (fortune: %)");
    f("tokenizer", tokenizer, "a SentencePiece model (spiece.model, tokenizer.model)");
    f("extra_ids", extra_ids, "sentinel ids after the tokenizer's pieces (T5: 100)",
      config::in_range<int64_t>(0, 100000));
    f("max_line_bytes", max_line_bytes, "a longer line or JSON record is bad input",
      config::in_range<int64_t>(16, int64_t{1} << 31));
    f("skip_bad_records", skip_bad_records,
      "skip (and count) bad records and broken gzip streams instead of stopping");
    f("shuffle_buffer", shuffle_buffer, "chunks the training order is shuffled within",
      config::in_range<int64_t>(1, 1 << 24));
    f("prefetch", prefetch, "batches prepared ahead on the loader's thread",
      config::in_range<int64_t>(1, 64));
    f("workers", workers,
      "threads tokenising the text (the loader's own among them); the batches are the same "
      "for any count",
      config::in_range<int64_t>(1, 256));
  }
  TextReaderOptions reading() const;
};

// Whether the document at `position` in file `file` (its index in the corpus' sorted files) is
// held out for validation: a hash of the two against `share`, the same for every run.
bool held_out(int64_t file, int64_t position, double share);

// Which documents a stream reads.
enum class DocumentSet { kAll, kTraining, kHeldOut };

// What a TokenChunkStream reads and how.
struct ChunkStreamOptions {
  TextReaderOptions reading;
  TokenDtype token_dtype = TokenDtype::kUint16;
  int64_t length = 568;  // tokens per chunk
  DocumentSet set = DocumentSet::kAll;
  double share = 0;  // the held-out share that `set` refers to
  int64_t workers = 1;
};

// `options`' reading, dtype and workers with the given length and set.
ChunkStreamOptions chunk_stream_options(const TextCorpusOptions& options, int64_t length,
                                        DocumentSet set);

// Raw chunks of `length` tokens, in a deterministic order (see the file comment).
class TokenChunkStream {
 public:
  TokenChunkStream(std::vector<std::filesystem::path> files,
                   std::shared_ptr<const Tokenizer> tokenizer, ChunkStreamOptions options);
  // Starts over: files in the order of (seed, pass) when `shuffle`, else sorted; chunks through
  // a shuffle buffer of `buffer` drawn from the same stream when shuffling.
  void start(uint64_t seed, int64_t pass, bool shuffle, int64_t buffer);
  // The next chunk; nullopt when the pass is over (a last partial chunk is dropped).
  std::optional<std::vector<int64_t>> next();
  // Bad records (token blocks) skipped since start() (skip_bad_records).
  int64_t skipped() const;

 private:
  std::optional<std::vector<int64_t>> next_in_order();
  // Reads the next block of documents (held-out ones filtered), tokenises it on the workers and
  // appends it to pending_; false at the end of the pass.
  bool read_block();
  // The current file's next document as text or as ids; nullopt at the file's end.
  bool next_document(std::string& text, std::vector<int64_t>& ids);
  void close_file();

  std::vector<std::filesystem::path> files_;
  std::shared_ptr<const Tokenizer> tokenizer_;
  ChunkStreamOptions options_;
  std::vector<size_t> order_;
  size_t next_file_ = 0;
  size_t current_file_ = 0;
  int64_t position_ = 0;  // documents (token blocks) read of the current file
  std::unique_ptr<TextFileReader> reader_;
  std::unique_ptr<TokenFileReader> token_reader_;
  std::vector<int64_t> pending_;  // tokens not yet cut into a chunk, from pending_start_
  size_t pending_start_ = 0;
  std::vector<std::vector<int64_t>> buffer_;
  int64_t buffer_size_ = 1;
  bool shuffle_ = false;
  std::optional<SampleRandom> random_;
  int64_t skipped_ = 0;
  bool exhausted_ = false;
};

}  // namespace exfusion
