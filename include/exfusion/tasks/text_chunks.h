// What the language tasks share: the corpus (text/text_corpus.h) tokenised and cut into raw
// chunks, each chunk made into one sample by the task (span corruption's inputs and targets, a
// causal language model's tokens and next tokens), the training batches built on the loader's
// thread ahead of the step (every rank reads the whole global batch's chunks and makes its own
// rows; a resumed epoch reads past the batches it skips), and a fixed set of validation samples
// from the held-out documents or the validation files.
#pragma once
#include <torch/types.h>

#include <functional>
#include <memory>
#include <vector>

#include "exfusion/data/batch.h"
#include "exfusion/data/sample_random.h"
#include "exfusion/tasks/task.h"
#include "exfusion/text/text_corpus.h"
#include "exfusion/text/tokenizer.h"

namespace exfusion {

// How a task makes a sample of a raw chunk.
struct ChunkSampling {
  int64_t raw = 0;  // tokens per chunk
  int64_t input_length = 0, target_length = 0;
  // Writes `chunk`'s sample into row `row` of `inputs` [B, input_length] and `targets`
  // [B, target_length] (int64), drawing from the sample's own random stream.
  std::function<void(const std::vector<int64_t>& chunk, SampleRandom random, torch::Tensor& inputs,
                     torch::Tensor& targets, int64_t row)>
      fill;
  // The batch of those rows: what else the model reads (a decoder's shifted targets) and the
  // target tokens counted.
  std::function<Batch(torch::Tensor inputs, torch::Tensor targets)> finish;
};

// data.tokenizer with data.extra_ids sentinels, checked against the model's vocabulary.
std::shared_ptr<const Tokenizer> open_task_tokenizer(const TextCorpusOptions& data,
                                                     const ModelOptions& model);

// The validation samples and, `with_train`, the training batches of `data` sampled so; the
// description holds what every language task reports (the task adds its own lengths).
TaskData load_text_chunks(const TextCorpusOptions& data,
                          const std::shared_ptr<const Tokenizer>& tokenizer,
                          const ChunkSampling& sampling, const TaskOptions& task, bool with_train);

}  // namespace exfusion
