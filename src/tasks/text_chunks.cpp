// The language tasks' batches over raw token chunks (see text_chunks.h).
#include "exfusion/tasks/text_chunks.h"

#include <algorithm>
#include <stdexcept>

#include "exfusion/data/prefetch_queue.h"
#include "exfusion/util/error.h"

namespace exfusion {
namespace fs = std::filesystem;
namespace {

// The training batches: chunks from the stream, each epoch a pass (wrapping into further
// passes when samples_per_epoch asks for more), read, tokenised and sampled on the loader's
// thread (and the stream's tokenising workers) ahead of the training step.
class TextChunkBatches : public BatchSource {
 public:
  TextChunkBatches(TokenChunkStream stream, ChunkSampling sampling, const TaskOptions& task,
                   int64_t samples_per_epoch, int64_t shuffle_buffer, int64_t prefetch,
                   bool may_skip)
      : stream_(std::move(stream)),
        sampling_(std::move(sampling)),
        task_(task),
        samples_(samples_per_epoch),
        shuffle_buffer_(shuffle_buffer),
        may_skip_(may_skip),
        queue_(prefetch) {}

  int64_t batches_per_epoch() const override { return samples_ / global_batch(); }
  int64_t size() const override { return samples_; }
  bool may_skip() const override { return may_skip_; }

  void start_epoch(int64_t epoch, int64_t skip_batches) override {
    queue_.start([this, epoch, skip_batches](const PrefetchQueue<Batch>::Push& push) {
      produce(epoch, skip_batches, push);
    });
  }

  std::optional<Batch> next() override { return queue_.next(); }

 private:
  int64_t global_batch() const { return task_.batch_size * task_.shard.count; }

  // The epoch's pass `wrap`: distinct file orders and shuffles for every (epoch, wrap).
  void start_pass(int64_t epoch, int64_t wrap) {
    stream_.start(static_cast<uint64_t>(task_.seed), epoch * (int64_t{1} << 20) + wrap,
                  /*shuffle=*/true, shuffle_buffer_);
  }

  void produce(int64_t epoch, int64_t skip_batches, const PrefetchQueue<Batch>::Push& push) {
    int64_t wrap = 0;
    start_pass(epoch, wrap);
    int64_t skipped_before = 0;
    const auto per_rank = task_.batch_size;
    const auto first = task_.shard.index * per_rank;
    for (int64_t b = 0; b < batches_per_epoch(); ++b) {
      const bool wanted = b >= skip_batches;
      auto inputs = torch::empty({per_rank, sampling_.input_length}, torch::kInt64);
      auto targets = torch::empty({per_rank, sampling_.target_length}, torch::kInt64);
      for (int64_t s = 0; s < global_batch(); ++s) {
        auto chunk = stream_.next();
        if (!chunk) {  // the pass is over before the epoch: the next pass goes on
          skipped_before -= stream_.skipped();
          start_pass(epoch, ++wrap);
          chunk = stream_.next();
          if (!chunk) throw InputError("data.train: the corpus holds no whole chunk");
        }
        if (wanted && s >= first && s < first + per_rank) {
          sampling_.fill(*chunk, sample_random(static_cast<uint64_t>(task_.seed), epoch, b, s),
                         inputs, targets, s - first);
        }
      }
      const auto skipped = stream_.skipped() - skipped_before;
      skipped_before = stream_.skipped();
      if (!wanted) continue;
      auto batch = sampling_.finish(std::move(inputs), std::move(targets));
      batch.skipped = skipped;
      if (task_.pin_memory) {
        batch.inputs = batch.inputs.pin_memory();
        batch.targets = batch.targets.pin_memory();
        if (batch.decoder_inputs.defined())
          batch.decoder_inputs = batch.decoder_inputs.pin_memory();
      }
      if (!push(std::move(batch))) return;
    }
  }

  TokenChunkStream stream_;
  ChunkSampling sampling_;
  TaskOptions task_;
  int64_t samples_;
  int64_t shuffle_buffer_;
  bool may_skip_;
  PrefetchQueue<Batch> queue_;  // last: its producer, which reads the members above, stops first
};

// Validation: fixed samples in order; this rank's part of each global batch.
class FixedChunkBatches : public BatchSource {
 public:
  FixedChunkBatches(torch::Tensor inputs, torch::Tensor targets, ChunkSampling sampling,
                    const TaskOptions& task)
      : inputs_(std::move(inputs)),
        targets_(std::move(targets)),
        sampling_(std::move(sampling)),
        task_(task) {}
  int64_t batches_per_epoch() const override {
    const auto global = task_.batch_size * task_.shard.count;
    return (size() + global - 1) / global;
  }
  int64_t size() const override { return inputs_.size(0); }
  void start_epoch(int64_t /*epoch*/, int64_t skip_batches) override { next_ = skip_batches; }
  std::optional<Batch> next() override {
    const auto global = task_.batch_size * task_.shard.count;
    while (next_ < batches_per_epoch()) {
      const auto start = next_++ * global + task_.shard.index * task_.batch_size;
      const auto end = std::min(start + task_.batch_size, size());
      if (start >= end) continue;  // this rank's part of the last batch is empty
      return sampling_.finish(inputs_.slice(0, start, end), targets_.slice(0, start, end));
    }
    return std::nullopt;
  }

 private:
  torch::Tensor inputs_, targets_;
  ChunkSampling sampling_;
  TaskOptions task_;
  int64_t next_ = 0;
};

}  // namespace

std::shared_ptr<const Tokenizer> open_task_tokenizer(const TextCorpusOptions& data,
                                                     const ModelOptions& model) {
  if (data.tokenizer.empty()) {
    throw InputError(
        "data.tokenizer: no tokenizer given (a SentencePiece model; `exfusion "
        "tokenizer train` makes one from the corpus)");
  }
  auto tokenizer = std::make_shared<const Tokenizer>(data.tokenizer, data.extra_ids);
  if (tokenizer->size() > model.num_outputs()) {
    throw InputError(
        "data.tokenizer " + data.tokenizer + ": " + std::to_string(tokenizer->size()) +
        " ids (with " + std::to_string(data.extra_ids) +
        " sentinels), more than model.vocab_size = " + std::to_string(model.num_outputs()));
  }
  return tokenizer;
}

TaskData load_text_chunks(const TextCorpusOptions& data,
                          const std::shared_ptr<const Tokenizer>& tokenizer,
                          const ChunkSampling& sampling, const TaskOptions& task, bool with_train) {
  if (data.train.empty() && (with_train || data.validation.empty())) {
    throw InputError("data.train: no corpus given (a file, a folder or a glob)");
  }
  const auto train_files =
      data.train.empty() ? std::vector<fs::path>{} : expand_text_paths({data.train});
  const bool own_validation = !data.validation.empty();
  if (!own_validation && data.validation_share <= 0) {
    throw InputError("data.validation_share = 0 and no data.validation: nothing to validate on");
  }

  TaskData out;
  // Validation samples, in order, each from its own fixed stream.
  {
    TokenChunkStream stream(
        own_validation ? expand_text_paths({data.validation}) : train_files, tokenizer,
        chunk_stream_options(data, sampling.raw,
                             own_validation ? DocumentSet::kAll : DocumentSet::kHeldOut));
    stream.start(0, 0, /*shuffle=*/false, 1);
    std::vector<std::vector<int64_t>> chunks;
    while (static_cast<int64_t>(chunks.size()) < data.validation_samples) {
      auto chunk = stream.next();
      if (!chunk) break;
      chunks.push_back(std::move(*chunk));
    }
    if (chunks.empty()) {
      throw InputError((own_validation ? "data.validation " + data.validation
                                       : "data.train " + data.train + " (its held-out share)") +
                       ": no whole chunk of " + std::to_string(sampling.raw) +
                       " tokens to validate on");
    }
    const auto count = static_cast<int64_t>(chunks.size());
    auto inputs = torch::empty({count, sampling.input_length}, torch::kInt64);
    auto targets = torch::empty({count, sampling.target_length}, torch::kInt64);
    for (int64_t i = 0; i < count; ++i) {
      sampling.fill(chunks[static_cast<size_t>(i)], sample_random(0, 0, 0, i), inputs, targets, i);
    }
    const auto whole = sampling.finish(inputs, targets);
    out.test_targets = targets;
    out.test_inputs = {{"inputs", inputs}};
    if (whole.decoder_inputs.defined())
      out.test_inputs.emplace_back("decoder_inputs", whole.decoder_inputs);
    out.test = std::make_unique<FixedChunkBatches>(inputs, targets, sampling, task);
  }
  if (with_train) {
    const auto set = own_validation ? DocumentSet::kAll : DocumentSet::kTraining;
    int64_t samples = data.samples_per_epoch;
    if (samples == 0) {  // one pass over the corpus, counting its chunks
      TokenChunkStream counting(train_files, tokenizer,
                                chunk_stream_options(data, sampling.raw, set));
      counting.start(0, 0, /*shuffle=*/false, 1);
      while (counting.next()) ++samples;
    }
    out.train = std::make_unique<TextChunkBatches>(
        TokenChunkStream(train_files, tokenizer, chunk_stream_options(data, sampling.raw, set)),
        sampling, task, samples, data.shuffle_buffer, data.prefetch, data.skip_bad_records);
  }
  out.description = {{"format", "text"},
                     {"train", data.train},
                     {"validation", own_validation ? data.validation : "held out of train"},
                     {"train_files", train_files.size()},
                     {"tokenizer", data.tokenizer},
                     {"vocabulary", tokenizer->size()},
                     {"raw_tokens", sampling.raw},
                     {"validation_samples", out.test->size()}};
  return out;
}

}  // namespace exfusion
