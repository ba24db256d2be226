// T5's pre-training task as nanoT5 runs it: the corpus (text/text_corpus.h) tokenised,
// documents concatenated with EOS after each and cut into raw chunks (568 tokens for 512
// inputs), each chunk span-corrupted (text/span_corruption.h) with the sample's own random
// stream into 512 encoder inputs and 114 targets; the decoder reads the targets shifted right
// after the decoder start (pad, 0). Loss and token accuracy per target token, perplexity the
// headline. The model is an EncoderDecoder (T5) whose input_shapes() give the two lengths.
#pragma once
#include "exfusion/tasks/token_prediction.h"
#include "exfusion/text/text_corpus.h"

namespace exfusion {

struct SpanCorruptionDataOptions : TextCorpusOptions {
  double noise_density = 0.15;
  double mean_noise_span_length = 3.0;

  template <class Fields>
  void fields(Fields& f) {
    TextCorpusOptions::fields(f);
    f("noise_density", noise_density, "share of each chunk's tokens corrupted (T5: 0.15)",
      config::Check<double>{"a share in (0, 1)", [](double v) { return v > 0 && v < 1; }});
    f("mean_noise_span_length", mean_noise_span_length, "mean corrupted span (T5: 3)",
      config::Check<double>{"at least 1", [](double v) { return v >= 1; }});
  }
  // The model reads two sequences, and its target length is what span corruption of its input
  // length makes (nanoT5's compute_input_and_target_lengths).
  void validate_with(const ModelOptions& model, const config::Location& at) const;
};

class SpanCorruptionTask : public TokenPredictionTask {
 public:
  explicit SpanCorruptionTask(TaskOptions options) : TokenPredictionTask(options) {}
  TaskData load_data(DataSection& data, const ModelOptions& model, bool with_train) const override;
  // The folder as the validation corpus.
  nlohmann::json data_dir_patch(const std::string& dir) const override;
  torch::Tensor forward(ModelImpl& model, const Batch& batch) const override;
  Batch synthetic_batch(const ModelOptions& model, int64_t batch_size) const override;
  double tokens_per_sample(const ModelOptions& model) const override;
};

// The decoder's inputs: `targets` [B, L] shifted right by one, `start` first.
torch::Tensor shift_right(const torch::Tensor& targets, int64_t start);

}  // namespace exfusion
