// The language tasks' corpus options and their chunk stream (see text_corpus.h).
#include "exfusion/text/text_corpus.h"

#include <algorithm>
#include <numeric>

#include "exfusion/util/index_threads.h"

namespace exfusion {

const config::Choices<TextFormat>& text_format_names() {
  static const config::Choices<TextFormat> names{{{"auto", TextFormat::kAuto},
                                                  {"text", TextFormat::kPlain},
                                                  {"jsonl", TextFormat::kJsonLines},
                                                  {"tokens", TextFormat::kTokens}}};
  return names;
}

const config::Choices<DocumentSplit>& document_split_names() {
  static const config::Choices<DocumentSplit> names{{{"file", DocumentSplit::kFile},
                                                     {"blank_line", DocumentSplit::kBlankLine},
                                                     {"line", DocumentSplit::kLine},
                                                     {"separator", DocumentSplit::kSeparator}}};
  return names;
}

TextReaderOptions TextCorpusOptions::reading() const {
  TextReaderOptions options;
  options.format = format;
  options.text_field = text_field;
  options.documents = documents;
  options.separator = separator;
  options.max_line_bytes = max_line_bytes;
  options.skip_bad_records = skip_bad_records;
  return options;
}

bool held_out(int64_t file, int64_t position, double share) {
  constexpr uint64_t kHeldOutKey = 0x68656c646f7574ULL;  // fixed: every run holds out the same
  const uint64_t hash = splitmix64(kHeldOutKey ^ splitmix64(static_cast<uint64_t>(file)) ^
                                   (static_cast<uint64_t>(position) * 0x9e3779b97f4a7c15ULL));
  return static_cast<double>(hash >> 11) * 0x1.0p-53 < share;
}

ChunkStreamOptions chunk_stream_options(const TextCorpusOptions& options, int64_t length,
                                        DocumentSet set) {
  ChunkStreamOptions stream;
  stream.reading = options.reading();
  stream.token_dtype = options.token_dtype;
  stream.length = length;
  stream.set = set;
  stream.share = options.validation_share;
  stream.workers = options.workers;
  return stream;
}

TokenChunkStream::TokenChunkStream(std::vector<std::filesystem::path> files,
                                   std::shared_ptr<const Tokenizer> tokenizer,
                                   ChunkStreamOptions options)
    : files_(std::move(files)), tokenizer_(std::move(tokenizer)), options_(std::move(options)) {}

void TokenChunkStream::start(uint64_t seed, int64_t pass, bool shuffle, int64_t buffer) {
  order_.resize(files_.size());
  std::iota(order_.begin(), order_.end(), size_t{0});
  shuffle_ = shuffle;
  buffer_size_ = shuffle ? std::max<int64_t>(buffer, 1) : 1;
  random_.emplace(sample_random(seed, pass, -1, -2));
  if (shuffle) {
    for (size_t i = order_.size(); i > 1; --i) {
      const auto j = random_->integer(0, static_cast<int64_t>(i) - 1);
      std::swap(order_[i - 1], order_[static_cast<size_t>(j)]);
    }
  }
  next_file_ = 0;
  position_ = 0;
  reader_.reset();
  token_reader_.reset();
  pending_.clear();
  pending_start_ = 0;
  buffer_.clear();
  skipped_ = 0;
  exhausted_ = false;
}

int64_t TokenChunkStream::skipped() const {
  return skipped_ + (reader_ ? reader_->skipped() : 0) +
         (token_reader_ ? token_reader_->skipped() : 0);
}

void TokenChunkStream::close_file() {
  skipped_ += (reader_ ? reader_->skipped() : 0) + (token_reader_ ? token_reader_->skipped() : 0);
  reader_.reset();
  token_reader_.reset();
}

bool TokenChunkStream::next_document(std::string& text, std::vector<int64_t>& ids) {
  if (token_reader_) {
    auto block = token_reader_->next();
    if (!block) return false;
    ids = std::move(*block);
    return true;
  }
  auto document = reader_->next();
  if (!document) return false;
  text = std::move(document->text);
  return true;
}

bool TokenChunkStream::read_block() {
  // Documents per block: enough to keep the workers busy, fixed so that the reading (and the
  // skipped counts it reports) is the same for any worker count.
  constexpr size_t kBlockDocuments = 256;
  struct Document {
    std::string text;
    std::vector<int64_t> ids;
    bool is_text = false;
  };
  std::vector<Document> block;
  while (block.size() < kBlockDocuments) {
    if (!reader_ && !token_reader_) {
      if (next_file_ == order_.size()) break;
      current_file_ = order_[next_file_++];
      const auto& file = files_[current_file_];
      if (text_format_of(file, options_.reading) == TextFormat::kTokens) {
        TokenFileOptions tokens;
        tokens.dtype = options_.token_dtype;
        tokens.block_tokens = options_.length;
        tokens.vocabulary = tokenizer_->pieces();
        tokens.skip_bad_records = options_.reading.skip_bad_records;
        token_reader_ = std::make_unique<TokenFileReader>(file, tokens);
      } else {
        reader_ = std::make_unique<TextFileReader>(file, options_.reading);
      }
      position_ = 0;
    }
    Document document;
    document.is_text = reader_ != nullptr;
    if (!next_document(document.text, document.ids)) {
      close_file();
      continue;
    }
    const auto position = position_++;
    if (options_.set != DocumentSet::kAll &&
        held_out(static_cast<int64_t>(current_file_), position, options_.share) !=
            (options_.set == DocumentSet::kHeldOut)) {
      continue;
    }
    block.push_back(std::move(document));
  }
  if (block.empty()) return false;
  for_each_index_in_threads(static_cast<int64_t>(block.size()), options_.workers, [&](int64_t i) {
    auto& document = block[static_cast<size_t>(i)];
    if (document.is_text) document.ids = tokenizer_->encode(document.text);
  });
  if (pending_start_ > 0) {  // drop what earlier chunks took before the block goes in
    pending_.erase(pending_.begin(), pending_.begin() + static_cast<ptrdiff_t>(pending_start_));
    pending_start_ = 0;
  }
  for (const auto& document : block) {
    pending_.insert(pending_.end(), document.ids.begin(), document.ids.end());
    // A token file's blocks are cut from a stream that holds its EOS tokens already.
    if (document.is_text) pending_.push_back(tokenizer_->eos_id());
  }
  return true;
}

std::optional<std::vector<int64_t>> TokenChunkStream::next_in_order() {
  const auto length = static_cast<size_t>(options_.length);
  while (pending_.size() - pending_start_ < length) {
    if (!read_block()) return std::nullopt;
  }
  const auto first = pending_.begin() + static_cast<ptrdiff_t>(pending_start_);
  std::vector<int64_t> chunk(first, first + static_cast<ptrdiff_t>(length));
  pending_start_ += length;
  return chunk;
}

std::optional<std::vector<int64_t>> TokenChunkStream::next() {
  if (!shuffle_) return next_in_order();
  // Fill the buffer, then hand out a random held chunk and put the next one in its place; at
  // the pass's end the rest leave in random order.
  while (!exhausted_ && static_cast<int64_t>(buffer_.size()) < buffer_size_) {
    auto chunk = next_in_order();
    if (!chunk) {
      exhausted_ = true;
      break;
    }
    buffer_.push_back(std::move(*chunk));
  }
  if (buffer_.empty()) return std::nullopt;
  const auto pick =
      static_cast<size_t>(random_->integer(0, static_cast<int64_t>(buffer_.size()) - 1));
  auto chunk = std::move(buffer_[pick]);
  if (!exhausted_) {
    if (auto incoming = next_in_order()) {
      buffer_[pick] = std::move(*incoming);
      return chunk;
    }
    exhausted_ = true;
  }
  buffer_[pick] = std::move(buffer_.back());
  buffer_.pop_back();
  return chunk;
}

}  // namespace exfusion
