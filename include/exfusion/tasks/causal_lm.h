// Causal language modelling over a text corpus: documents tokenised with EOS after each,
// concatenated and cut into chunks of sequence_length + 1 tokens (packed, no padding), each
// sample the chunk's first sequence_length tokens and, as targets, the same shifted by one (the
// next token at every position). Loss and token accuracy per token, perplexity the headline.
// The model reads one token sequence (input_shapes() {{L}}, num_outputs() the vocabulary) and
// returns logits [B, L, vocab]: a decoder language model (model.kind llama).
#pragma once
#include "exfusion/tasks/token_prediction.h"
#include "exfusion/text/text_corpus.h"

namespace exfusion {

struct CausalLmDataOptions : TextCorpusOptions {
  CausalLmDataOptions() { extra_ids = 0; }  // no sentinels: a decoder LM's vocabulary is its own
  // The model reads one token sequence.
  void validate_with(const ModelOptions& model, const config::Location& at) const;
};

class CausalLmTask : public TokenPredictionTask {
 public:
  explicit CausalLmTask(TaskOptions options) : TokenPredictionTask(options) {}
  TaskData load_data(DataSection& data, const ModelOptions& model, bool with_train) const override;
  // The folder as the validation corpus.
  nlohmann::json data_dir_patch(const std::string& dir) const override;
  Batch synthetic_batch(const ModelOptions& model, int64_t batch_size) const override;
  double tokens_per_sample(const ModelOptions& model) const override;
};

}  // namespace exfusion
