// Span corruption over a text corpus (see span_corruption.h).
#include "exfusion/tasks/span_corruption.h"

#include <ATen/ATen.h>

#include <algorithm>

#include "exfusion/tasks/text_chunks.h"
#include "exfusion/text/span_corruption.h"
#include "exfusion/util/error.h"

namespace exfusion {
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

Batch span_corruption_batch(torch::Tensor inputs, torch::Tensor targets) {
  Batch batch;
  batch.decoder_inputs = shift_right(targets, 0);
  batch.tokens = targets.numel();
  batch.inputs = std::move(inputs);
  batch.targets = std::move(targets);
  return batch;
}

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
  const auto tokenizer = open_task_tokenizer(data, model);
  Corruption corruption;
  corruption.lengths = span_corruption_lengths(model.input_shapes().at(0).at(0), data.noise_density,
                                               data.mean_noise_span_length);
  corruption.noise_density = data.noise_density;
  corruption.mean_span = data.mean_noise_span_length;
  corruption.first_sentinel = tokenizer->sentinel(0);
  corruption.eos = tokenizer->eos_id();
  ChunkSampling sampling;
  sampling.raw = corruption.lengths.raw;
  sampling.input_length = corruption.lengths.inputs;
  sampling.target_length = corruption.lengths.targets;
  sampling.fill = [corruption](const std::vector<int64_t>& chunk, SampleRandom random,
                               torch::Tensor& inputs, torch::Tensor& targets, int64_t row) {
    corrupt_into(chunk, corruption, random, inputs, targets, row);
  };
  sampling.finish = span_corruption_batch;
  auto out = load_text_chunks(data, tokenizer, sampling, options_, with_train);
  out.description["input_tokens"] = corruption.lengths.inputs;
  out.description["target_tokens"] = corruption.lengths.targets;
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

Batch SpanCorruptionTask::synthetic_batch(const ModelOptions& model, int64_t batch_size) const {
  const auto shapes = model.input_shapes();
  return span_corruption_batch(
      torch::randint(0, model.num_outputs(), {batch_size, shapes.at(0).at(0)}),
      torch::randint(0, model.num_outputs(), {batch_size, shapes.at(1).at(0)}));
}

double SpanCorruptionTask::tokens_per_sample(const ModelOptions& model) const {
  return static_cast<double>(model.input_shapes().at(1).at(0));
}

}  // namespace exfusion
