// The data section the language tasks share: where the corpus lies (plain text or JSON Lines,
// gzip or not), how its files split into documents, the tokenizer, the held-out share, and
// the stream of raw token chunks the tasks cut their samples from. The stream is deterministic:
// files in a per-(seed, pass) order, documents tokenised with EOS after each, concatenated and
// cut into chunks, which pass through a seeded shuffle buffer; a held-out document is chosen by
// its (file, position) alone, so training and validation never share one.
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
#include "exfusion/text/tokenizer.h"

namespace exfusion {

const config::Choices<TextFormat>& text_format_names();        // auto, text, jsonl
const config::Choices<DocumentSplit>& document_split_names();  // file, blank_line, line, separator

struct TextCorpusOptions {
  std::string train;       // a file, a folder or a glob ({a,b} alternatives allowed)
  std::string validation;  // the same; empty: validation_share of train's documents
  double validation_share = 0.01;
  int64_t validation_samples = 256;  // at most this many validation samples (the first ones)
  int64_t samples_per_epoch = 0;     // 0: counted by one pass over the corpus when it opens
  TextFormat format = TextFormat::kAuto;
  std::string text_field = "text";
  DocumentSplit documents = DocumentSplit::kBlankLine;
  std::string separator = "%";
  std::string tokenizer;    // a SentencePiece model (exfusion tokenizer train writes one)
  int64_t extra_ids = 100;  // sentinels after the tokenizer's pieces (T5: 100)
  int64_t max_line_bytes = 1 << 20;
  bool skip_bad_records = false;
  int64_t shuffle_buffer = 1024;  // chunks the training order is shuffled within
  int64_t prefetch = 4;           // batches prepared ahead on the loader's thread

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
    f("format", format, "auto (by the file name: .jsonl/.json[.gz] are JSON Lines), text, jsonl",
      text_format_names());
    f("text_field", text_field, "JSON Lines: the key of each record's text (C4: text)");
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
  }
  TextReaderOptions reading() const;
};

// Whether the document at `position` in file `file` (its index in the corpus' sorted files) is
// held out for validation: a hash of the two against `share`, the same for every run.
bool held_out(int64_t file, int64_t position, double share);

// Which documents a stream reads.
enum class DocumentSet { kAll, kTraining, kHeldOut };

// Raw chunks of `length` tokens, in a deterministic order (see the file comment).
class TokenChunkStream {
 public:
  TokenChunkStream(std::vector<std::filesystem::path> files, TextReaderOptions reading,
                   std::shared_ptr<const Tokenizer> tokenizer, int64_t length, DocumentSet set,
                   double share);
  // Starts over: files in the order of (seed, pass) when `shuffle`, else sorted; chunks through
  // a shuffle buffer of `buffer` drawn from the same stream when shuffling.
  void start(uint64_t seed, int64_t pass, bool shuffle, int64_t buffer);
  // The next chunk; nullopt when the pass is over (a last partial chunk is dropped).
  std::optional<std::vector<int64_t>> next();
  // Bad records skipped since start() (skip_bad_records).
  int64_t skipped() const { return skipped_ + (reader_ ? reader_->skipped() : 0); }

 private:
  std::optional<std::vector<int64_t>> next_in_order();

  std::vector<std::filesystem::path> files_;
  TextReaderOptions reading_;
  std::shared_ptr<const Tokenizer> tokenizer_;
  int64_t length_;
  DocumentSet set_;
  double share_;
  std::vector<size_t> order_;
  size_t next_file_ = 0;
  size_t current_file_ = 0;
  int64_t position_ = 0;  // documents read of the current file
  std::unique_ptr<TextFileReader> reader_;
  std::vector<int64_t> pending_;  // tokens not yet cut into a chunk
  std::vector<std::vector<int64_t>> buffer_;
  int64_t buffer_size_ = 1;
  bool shuffle_ = false;
  std::optional<SampleRandom> random_;
  int64_t skipped_ = 0;
  bool exhausted_ = false;
};

}  // namespace exfusion
