// Span corruption over a text corpus (see span_corruption.h).
#include "exfusion/tasks/span_corruption.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>

#include "exfusion/data/prefetch_queue.h"
#include "exfusion/layers/cross_entropy.h"
#include "exfusion/text/span_corruption.h"
#include "exfusion/util/error.h"

namespace exfusion {
namespace fs = std::filesystem;
namespace {

// What turns a chunk into a sample.
struct Corruption {
  SpanCorruptionLengths lengths;
  double noise_density = 0.15;
  double mean_span = 3.0;
  int64_t first_sentinel = 0;
  int64_t eos = 1;
};

// One sample's inputs and targets written into rows `row` of the batch's tensors.
void corrupt_into(const std::vector<int64_t>& chunk, const Corruption& corruption,
                  SampleRandom random, torch::Tensor& inputs, torch::Tensor& targets, int64_t row) {
  const auto mask = random_spans_noise_mask(static_cast<int64_t>(chunk.size()),
                                            corruption.noise_density, corruption.mean_span, random);
  const auto pair = corrupt_spans(chunk, mask, corruption.first_sentinel, corruption.eos);
  if (static_cast<int64_t>(pair.inputs.size()) != corruption.lengths.inputs ||
      static_cast<int64_t>(pair.targets.size()) != corruption.lengths.targets) {
    throw std::logic_error("span corruption gave " + std::to_string(pair.inputs.size()) + "/" +
                           std::to_string(pair.targets.size()) + " tokens");
  }
  std::copy(pair.inputs.begin(), pair.inputs.end(), inputs[row].data_ptr<int64_t>());
  std::copy(pair.targets.begin(), pair.targets.end(), targets[row].data_ptr<int64_t>());
}

Batch finish_batch(torch::Tensor inputs, torch::Tensor targets) {
  Batch batch;
  batch.decoder_inputs = shift_right(targets, 0);
  batch.tokens = targets.numel();
  batch.inputs = std::move(inputs);
  batch.targets = std::move(targets);
  return batch;
}

// The training batches: chunks from the stream, each epoch a pass (wrapping into further
// passes when samples_per_epoch asks for more), read, tokenised and corrupted on the loader's
// thread (and the stream's tokenising workers) ahead of the training step.
class SpanCorruptionBatches : public BatchSource {
 public:
  SpanCorruptionBatches(TokenChunkStream stream, Corruption corruption, const TaskOptions& task,
                        int64_t samples_per_epoch, int64_t shuffle_buffer, int64_t prefetch,
                        bool may_skip)
      : stream_(std::move(stream)),
        corruption_(corruption),
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

  // Every rank reads the whole global batch's chunks (the stream is one sequence) and corrupts
  // its own rows; a resumed epoch reads past the batches it skips.
  void produce(int64_t epoch, int64_t skip_batches, const PrefetchQueue<Batch>::Push& push) {
    int64_t wrap = 0;
    start_pass(epoch, wrap);
    int64_t skipped_before = 0;
    const auto per_rank = task_.batch_size;
    const auto first = task_.shard.index * per_rank;
    for (int64_t b = 0; b < batches_per_epoch(); ++b) {
      const bool wanted = b >= skip_batches;
      auto inputs = torch::empty({per_rank, corruption_.lengths.inputs}, torch::kInt64);
      auto targets = torch::empty({per_rank, corruption_.lengths.targets}, torch::kInt64);
      for (int64_t s = 0; s < global_batch(); ++s) {
        auto chunk = stream_.next();
        if (!chunk) {  // the pass is over before the epoch: the next pass goes on
          skipped_before -= stream_.skipped();
          start_pass(epoch, ++wrap);
          chunk = stream_.next();
          if (!chunk) throw InputError("data.train: the corpus holds no whole chunk");
        }
        if (wanted && s >= first && s < first + per_rank) {
          corrupt_into(*chunk, corruption_,
                       sample_random(static_cast<uint64_t>(task_.seed), epoch, b, s), inputs,
                       targets, s - first);
        }
      }
      const auto skipped = stream_.skipped() - skipped_before;
      skipped_before = stream_.skipped();
      if (!wanted) continue;
      auto batch = finish_batch(std::move(inputs), std::move(targets));
      batch.skipped = skipped;
      if (task_.pin_memory) {
        batch.inputs = batch.inputs.pin_memory();
        batch.targets = batch.targets.pin_memory();
        batch.decoder_inputs = batch.decoder_inputs.pin_memory();
      }
      if (!push(std::move(batch))) return;
    }
  }

  TokenChunkStream stream_;
  Corruption corruption_;
  TaskOptions task_;
  int64_t samples_;
  int64_t shuffle_buffer_;
  bool may_skip_;
  PrefetchQueue<Batch> queue_;  // last: its producer, which reads the members above, stops first
};

// Validation: the first samples of the held-out documents, corrupted once (a fixed stream, the
// same for every run), in order; this rank's part of each global batch.
class FixedSpanBatches : public BatchSource {
 public:
  FixedSpanBatches(torch::Tensor inputs, torch::Tensor targets, const TaskOptions& task)
      : inputs_(std::move(inputs)), targets_(std::move(targets)), task_(task) {}
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
      return finish_batch(inputs_.slice(0, start, end), targets_.slice(0, start, end));
    }
    return std::nullopt;
  }

 private:
  torch::Tensor inputs_, targets_;
  TaskOptions task_;
  int64_t next_ = 0;
};

}  // namespace

torch::Tensor shift_right(const torch::Tensor& targets, int64_t start) {
  auto shifted = torch::full_like(targets, start);
  shifted.slice(1, 1) = targets.slice(1, 0, targets.size(1) - 1);
  return shifted;
}

void SpanCorruptionDataOptions::validate_with(const ModelOptions& model,
                                              const config::Location& at) const {
  const auto shapes = model.input_shapes();
  if (shapes.size() != 2 || shapes[0].size() != 1 || shapes[1].size() != 1) {
    throw InputError(at.source +
                     ": task span_corruption feeds an encoder-decoder two token "
                     "sequences (model.kind t5), and the model takes " +
                     nlohmann::json(shapes).dump() + " per sample");
  }
  const auto lengths = span_corruption_lengths(shapes[0][0], noise_density, mean_noise_span_length);
  if (lengths.targets != shapes[1][0]) {
    throw InputError(
        at.source + ": span corruption of model.input_length = " + std::to_string(shapes[0][0]) +
        " tokens at data.noise_density = " + config::detail::number_text(noise_density) + " and " +
        at.key_path("mean_noise_span_length") + " = " +
        config::detail::number_text(mean_noise_span_length) + " gives " +
        std::to_string(lengths.targets) +
        " targets: set model.target_length = " + std::to_string(lengths.targets));
  }
}

TaskData SpanCorruptionTask::load_data(DataSection& section, const ModelOptions& model,
                                       bool with_train) const {
  const auto& data = *section.as<SpanCorruptionDataOptions>();
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
  const auto shapes = model.input_shapes();
  Corruption corruption;
  corruption.lengths =
      span_corruption_lengths(shapes.at(0).at(0), data.noise_density, data.mean_noise_span_length);
  corruption.noise_density = data.noise_density;
  corruption.mean_span = data.mean_noise_span_length;
  corruption.first_sentinel = tokenizer->sentinel(0);
  corruption.eos = tokenizer->eos_id();
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
        chunk_stream_options(data, corruption.lengths.raw,
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
                       ": no whole chunk of " + std::to_string(corruption.lengths.raw) +
                       " tokens to validate on");
    }
    const auto count = static_cast<int64_t>(chunks.size());
    auto inputs = torch::empty({count, corruption.lengths.inputs}, torch::kInt64);
    auto targets = torch::empty({count, corruption.lengths.targets}, torch::kInt64);
    for (int64_t i = 0; i < count; ++i) {
      corrupt_into(chunks[static_cast<size_t>(i)], corruption, sample_random(0, 0, 0, i), inputs,
                   targets, i);
    }
    out.test_targets = targets;
    out.test_inputs = {{"inputs", inputs}, {"decoder_inputs", shift_right(targets, 0)}};
    out.test = std::make_unique<FixedSpanBatches>(inputs, targets, options_);
  }
  if (with_train) {
    const auto set = own_validation ? DocumentSet::kAll : DocumentSet::kTraining;
    int64_t samples = data.samples_per_epoch;
    if (samples == 0) {  // one pass over the corpus, counting its chunks
      TokenChunkStream counting(train_files, tokenizer,
                                chunk_stream_options(data, corruption.lengths.raw, set));
      counting.start(0, 0, /*shuffle=*/false, 1);
      while (counting.next()) ++samples;
    }
    out.train = std::make_unique<SpanCorruptionBatches>(
        TokenChunkStream(train_files, tokenizer,
                         chunk_stream_options(data, corruption.lengths.raw, set)),
        corruption, options_, samples, data.shuffle_buffer, data.prefetch, data.skip_bad_records);
  }
  out.description = {{"format", "text"},
                     {"train", data.train},
                     {"validation", own_validation ? data.validation : "held out of train"},
                     {"train_files", train_files.size()},
                     {"tokenizer", data.tokenizer},
                     {"vocabulary", tokenizer->size()},
                     {"raw_tokens", corruption.lengths.raw},
                     {"input_tokens", corruption.lengths.inputs},
                     {"target_tokens", corruption.lengths.targets},
                     {"validation_samples", out.test->size()}};
  return out;
}

nlohmann::json SpanCorruptionTask::data_dir_patch(const std::string& dir) const {
  return {{"validation", dir}};
}

torch::Tensor SpanCorruptionTask::forward(ModelImpl& model, const Batch& batch) const {
  auto* encoder_decoder = dynamic_cast<EncoderDecoder*>(&model);
  if (encoder_decoder == nullptr) {
    throw InputError("task span_corruption feeds an encoder-decoder (model.kind t5)");
  }
  return encoder_decoder->forward_encoder_decoder(batch.inputs, batch.decoder_inputs);
}

torch::Tensor SpanCorruptionTask::loss(const torch::Tensor& outputs, const Batch& batch) const {
  return token_cross_entropy(outputs.to(torch::kFloat32).flatten(0, 1), batch.targets.flatten(),
                             -100, options_.label_smoothing);
}

torch::Tensor SpanCorruptionTask::eval_loss_sum(const torch::Tensor& outputs,
                                                const Batch& batch) const {
  return at::cross_entropy_loss(outputs.flatten(0, 1), batch.targets.flatten(), {},
                                at::Reduction::Sum);
}

const TaskMetrics& SpanCorruptionTask::metrics() const {
  static const TaskMetrics declared{
      Averaging::kPerToken,
      {{"token_accuracy", Averaging::kPerToken, true, true, "tok acc"},
       {"perplexity", Averaging::kDerived, false, false, "ppl"}},
      "perplexity",
      "samples",
      "smp"};
  return declared;
}

torch::Tensor SpanCorruptionTask::metric_sums(const torch::Tensor& outputs,
                                              const Batch& batch) const {
  return outputs.detach().argmax(-1).eq(batch.targets).sum().to(torch::kFloat64).reshape({1});
}

void SpanCorruptionTask::derive(MetricValues& values) const {
  values.set("perplexity", std::exp(values.at("loss")));
}

Batch SpanCorruptionTask::synthetic_batch(const ModelOptions& model, int64_t batch_size) const {
  const auto shapes = model.input_shapes();
  return finish_batch(torch::randint(0, model.num_outputs(), {batch_size, shapes.at(0).at(0)}),
                      torch::randint(0, model.num_outputs(), {batch_size, shapes.at(1).at(0)}));
}

double SpanCorruptionTask::tokens_per_sample(const ModelOptions& model) const {
  return static_cast<double>(model.input_shapes().at(1).at(0));
}

}  // namespace exfusion
