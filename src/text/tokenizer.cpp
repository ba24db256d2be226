// SentencePiece behind the Tokenizer face (see tokenizer.h).
#include "exfusion/text/tokenizer.h"

#include "exfusion/util/error.h"

#ifdef EXFUSION_WITH_SENTENCEPIECE
#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>
#include <string>
#include <unordered_map>
#endif

namespace exfusion {
namespace fs = std::filesystem;

#ifdef EXFUSION_WITH_SENTENCEPIECE

struct Tokenizer::Model {
  sentencepiece::SentencePieceProcessor processor;
};

namespace {

// The corpus's documents, one SentencePiece "sentence" each, up to a count.
class DocumentIterator : public sentencepiece::SentenceIterator {
 public:
  DocumentIterator(std::vector<fs::path> files, TextReaderOptions options, int64_t limit)
      : files_(std::move(files)), options_(std::move(options)), limit_(limit) {
    Next();
  }
  bool done() const override { return done_; }
  void Next() override {
    while (!done_) {
      if (read_ >= limit_) {
        done_ = true;
        return;
      }
      if (!reader_) {
        if (next_file_ == files_.size()) {
          done_ = true;
          return;
        }
        reader_ = std::make_unique<TextFileReader>(files_[next_file_++], options_);
      }
      if (auto document = reader_->next()) {
        value_ = std::move(document->text);
        ++read_;
        return;
      }
      reader_.reset();
    }
  }
  const std::string& value() const override { return value_; }
  sentencepiece::util::Status status() const override { return {}; }
  int64_t read() const { return read_; }

 private:
  std::vector<fs::path> files_;
  TextReaderOptions options_;
  int64_t limit_;
  size_t next_file_ = 0;
  std::unique_ptr<TextFileReader> reader_;
  std::string value_;
  int64_t read_ = 0;
  bool done_ = false;
};

}  // namespace

Tokenizer::Tokenizer(const fs::path& model, int64_t extra_ids)
    : model_(std::make_unique<Model>()), extra_ids_(extra_ids) {
  if (!fs::is_regular_file(model)) throw InputError(model.string() + ": no such tokenizer file");
  const auto status = model_->processor.Load(model.string());
  if (!status.ok()) {
    throw InputError(model.string() + ": not a SentencePiece model (" + status.ToString() + ")");
  }
  if (model_->processor.eos_id() < 0) {
    throw InputError(model.string() + ": the tokenizer has no end-of-sequence piece");
  }
}

std::vector<int64_t> Tokenizer::encode(std::string_view text) const {
  std::vector<int> ids;
  const auto status = model_->processor.Encode(text, &ids);
  if (!status.ok()) throw InputError("tokenizer: " + status.ToString());
  return {ids.begin(), ids.end()};
}

std::string Tokenizer::decode(const std::vector<int64_t>& ids) const {
  std::string text;
  std::vector<int> pieces;
  for (const auto id : ids) {
    if (id >= 0 && id < this->pieces()) pieces.push_back(static_cast<int>(id));
  }
  const auto status = model_->processor.Decode(pieces, &text);
  if (!status.ok()) throw InputError("tokenizer: " + status.ToString());
  return text;
}

int64_t Tokenizer::pieces() const { return model_->processor.GetPieceSize(); }
int64_t Tokenizer::eos_id() const { return model_->processor.eos_id(); }
int64_t Tokenizer::pad_id() const { return model_->processor.pad_id(); }

TrainedTokenizer train_tokenizer(const TokenizerTraining& training) {
  if (training.vocab_size < 16) {
    throw InputError("--vocab-size " + std::to_string(training.vocab_size) + ": expected >= 16");
  }
  auto files = expand_text_paths(training.corpus);
  DocumentIterator documents(files, training.reading, training.max_documents);
  auto prefix = training.out;
  prefix.replace_extension();
  // The keyword form: Debian's headers leave out the TrainerSpec protobuf class.
  const std::unordered_map<std::string, std::string> spec{
      {"model_prefix", prefix.string()},
      {"model_type", "unigram"},
      {"vocab_size", std::to_string(training.vocab_size)},
      {"pad_id", "0"},
      {"eos_id", "1"},
      {"unk_id", "2"},
      {"bos_id", "-1"},
      {"byte_fallback", "true"},
      {"split_digits", "true"},
      {"character_coverage", "0.9995"},
      // Long documents (a fortune, a web page) are cut, not dropped, for training.
      {"max_sentence_length", std::to_string(1 << 16)},
      {"num_threads", "2"}};
  if (!training.out.parent_path().empty()) fs::create_directories(training.out.parent_path());
  const auto status = sentencepiece::SentencePieceTrainer::Train(spec, &documents);
  if (!status.ok()) {
    throw InputError("tokenizer training on " + std::to_string(documents.read()) +
                     " documents: " + status.ToString());
  }
  const auto written = fs::path(prefix.string() + ".model");
  if (written != training.out) fs::rename(written, training.out);
  return {training.out, training.vocab_size, documents.read()};
}

#else

struct Tokenizer::Model {};

namespace {
[[noreturn]] void no_sentencepiece() {
  throw InputError(
      "this build has no SentencePiece (Debian: libsentencepiece-dev; "
      "scripts/setup.sh installs it): no tokenizer can be read or trained");
}
}  // namespace

Tokenizer::Tokenizer(const fs::path& /*model*/, int64_t extra_ids) : extra_ids_(extra_ids) {
  no_sentencepiece();
}
std::vector<int64_t> Tokenizer::encode(std::string_view /*text*/) const { no_sentencepiece(); }
std::string Tokenizer::decode(const std::vector<int64_t>& /*ids*/) const { no_sentencepiece(); }
int64_t Tokenizer::pieces() const { no_sentencepiece(); }
int64_t Tokenizer::eos_id() const { no_sentencepiece(); }
int64_t Tokenizer::pad_id() const { no_sentencepiece(); }
TrainedTokenizer train_tokenizer(const TokenizerTraining& /*training*/) { no_sentencepiece(); }

#endif

Tokenizer::~Tokenizer() = default;
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;

}  // namespace exfusion
