// Causal language modelling over a text corpus (see causal_lm.h).
#include "exfusion/tasks/causal_lm.h"

#include <algorithm>
#include <filesystem>

#include "exfusion/tasks/text_chunks.h"
#include "exfusion/util/error.h"

namespace exfusion {
namespace {

Batch next_token_batch(torch::Tensor inputs, torch::Tensor targets) {
  Batch batch;
  batch.tokens = targets.numel();
  batch.inputs = std::move(inputs);
  batch.targets = std::move(targets);
  return batch;
}

int64_t sequence_length(const ModelOptions& model) { return model.input_shapes().at(0).at(0); }

}  // namespace

void CausalLmDataOptions::validate_with(const ModelOptions& model,
                                        const config::Location& at) const {
  const auto shapes = model.input_shapes();
  if (shapes.size() != 1 || shapes[0].size() != 1) {
    throw InputError(at.source +
                     ": task causal_lm feeds a decoder language model one token sequence "
                     "(model.kind llama), and the model takes " +
                     nlohmann::json(shapes).dump() + " per sample");
  }
  // A tokenizer that is there already is checked against the embedding's rows now, before a
  // run or an import writes anything (the loader checks it again when it opens it).
  if (!tokenizer.empty() && std::filesystem::is_regular_file(tokenizer)) {
    const Tokenizer pieces(tokenizer, extra_ids);
    if (pieces.size() > model.num_outputs()) {
      throw InputError(at.source + ": data.tokenizer " + tokenizer + ": " +
                       std::to_string(pieces.size()) + " pieces, more than the model's " +
                       std::to_string(model.num_outputs()) +
                       " token ids (vocab_size: its embedding's rows)");
    }
  }
}

TaskData CausalLmTask::load_data(DataSection& section, const ModelOptions& model,
                                 bool with_train) const {
  const auto& data = *section.as<CausalLmDataOptions>();
  const auto tokenizer = open_task_tokenizer(data, model);
  const auto length = sequence_length(model);
  ChunkSampling sampling;
  sampling.raw = length + 1;
  sampling.input_length = length;
  sampling.target_length = length;
  // Tokens 0 … L−1 in, 1 … L as their next tokens.
  sampling.fill = [length](const std::vector<int64_t>& chunk, SampleRandom /*random*/,
                           torch::Tensor& inputs, torch::Tensor& targets, int64_t row) {
    std::copy_n(chunk.begin(), length, inputs[row].data_ptr<int64_t>());
    std::copy_n(chunk.begin() + 1, length, targets[row].data_ptr<int64_t>());
  };
  sampling.finish = next_token_batch;
  auto out = load_text_chunks(data, tokenizer, sampling, options_, with_train);
  out.description["sequence_tokens"] = length;
  return out;
}

nlohmann::json CausalLmTask::data_dir_patch(const std::string& dir) const {
  return {{"validation", dir}};
}

Batch CausalLmTask::synthetic_batch(const ModelOptions& model, int64_t batch_size) const {
  const auto length = sequence_length(model);
  return next_token_batch(torch::randint(0, model.num_outputs(), {batch_size, length}),
                          torch::randint(0, model.num_outputs(), {batch_size, length}));
}

double CausalLmTask::tokens_per_sample(const ModelOptions& model) const {
  return static_cast<double>(sequence_length(model));
}

}  // namespace exfusion
