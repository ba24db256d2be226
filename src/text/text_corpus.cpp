// The language tasks' corpus options and their chunk stream (see text_corpus.h).
#include "exfusion/text/text_corpus.h"

#include <algorithm>
#include <numeric>

namespace exfusion {

const config::Choices<TextFormat>& text_format_names() {
  static const config::Choices<TextFormat> names{{{"auto", TextFormat::kAuto},
                                                  {"text", TextFormat::kPlain},
                                                  {"jsonl", TextFormat::kJsonLines}}};
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

TokenChunkStream::TokenChunkStream(std::vector<std::filesystem::path> files,
                                   TextReaderOptions reading,
                                   std::shared_ptr<const Tokenizer> tokenizer, int64_t length,
                                   DocumentSet set, double share)
    : files_(std::move(files)),
      reading_(std::move(reading)),
      tokenizer_(std::move(tokenizer)),
      length_(length),
      set_(set),
      share_(share) {}

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
  pending_.clear();
  buffer_.clear();
  skipped_ = 0;
  exhausted_ = false;
}

std::optional<std::vector<int64_t>> TokenChunkStream::next_in_order() {
  const auto length = static_cast<size_t>(length_);
  while (pending_.size() < length) {
    if (!reader_) {
      if (next_file_ == order_.size()) return std::nullopt;
      current_file_ = order_[next_file_++];
      reader_ = std::make_unique<TextFileReader>(files_[current_file_], reading_);
      position_ = 0;
    }
    auto document = reader_->next();
    if (!document) {
      skipped_ += reader_->skipped();
      reader_.reset();
      continue;
    }
    const auto position = position_++;
    if (set_ != DocumentSet::kAll && held_out(static_cast<int64_t>(current_file_), position,
                                              share_) != (set_ == DocumentSet::kHeldOut)) {
      continue;
    }
    const auto ids = tokenizer_->encode(document->text);
    pending_.insert(pending_.end(), ids.begin(), ids.end());
    pending_.push_back(tokenizer_->eos_id());
  }
  std::vector<int64_t> chunk(pending_.begin(), pending_.begin() + static_cast<ptrdiff_t>(length));
  pending_.erase(pending_.begin(), pending_.begin() + static_cast<ptrdiff_t>(length));
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
