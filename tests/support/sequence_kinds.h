// A model kind and a task kind that exist only in the tests, registered from here with no edit
// under src/: "two_stage" (token embedding, two stages of residual FFN blocks of different
// widths, a projection between them, a head per position) and "sequence_transduction" (token
// files in, a target token per position, padding, per-token loss, the target's probability per
// token and perplexity as the headline), with a data section of its own. They prove that what
// the trainer, fuse, export, eval, logs, sweeps and `exfusion config` handle is what a kind
// declares.
#pragma once
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "exfusion/config/fields.h"
#include "exfusion/models/ffn_config.h"
#include "exfusion/models/model.h"

namespace exfusion::testing {

struct TwoStageOptions {
  int64_t vocab = 16;
  std::vector<int64_t> stage_widths{16, 24};
  std::vector<int64_t> stage_depths{1, 2};
  double mlp_ratio = 2.0;
  int64_t max_length = 8;  // tokens per sample

  template <class Fields>
  void fields(Fields& f) {
    f("vocab", vocab, "token ids in [0, vocab)", config::in_range<int64_t>(2, 1 << 20));
    f("stage_widths", stage_widths, "the two stages' widths");
    f("stage_depths", stage_depths, "the two stages' blocks");
    f("mlp_ratio", mlp_ratio, "FFN hidden width / stage width",
      config::Check<double>{"a ratio in (0, 16]", [](double v) { return v > 0 && v <= 16; }});
    f("max_length", max_length, "tokens per sample", config::in_range<int64_t>(1, 4096));
  }
  void validate(const config::Location& at) const;
  int64_t blocks() const;

  ModelPtr build(const FfnConfig& ffn) const;
  double forward_flops_per_sample(const FfnConfig& ffn) const;
  void validate_ffn(const FfnConfig& ffn, const config::Location& at) const;
  std::vector<std::vector<int64_t>> input_shapes() const { return {{max_length}}; }
  int64_t num_outputs() const { return vocab; }
  // stages.<s>.<b>.ffn; `ffn.layers` counts the blocks across the stages, stage 0's first.
  std::vector<FfnSite> ffn_sites() const;
  TensorShapes dense_tensor_shapes() const;
  double parameters_outside_ffns() const;
};

// The sequence task's data section: a folder with train.txt and val.txt, one sample per line,
// "<input ids> : <target ids>" (as many targets as inputs), at most max_length of each.
struct SequenceDataOptions {
  std::string dir;
  int64_t max_length = 8;

  template <class Fields>
  void fields(Fields& f) {
    f("dir", dir, "folder holding train.txt and val.txt ('<input ids> : <target ids>' lines)");
    f("max_length", max_length, "tokens per sample: shorter lines are padded",
      config::in_range<int64_t>(1, 4096));
  }
  // max_length equals the model's (model.max_length).
  void validate_with(const ModelOptions& model, const config::Location& at) const;
};

// Registers "two_stage" (model_kinds) and "sequence_transduction" (task_kinds); idempotent.
void register_sequence_kinds();

// train.txt and val.txt of `train` and `test` random samples under `dir`: lengths 2..max,
// targets (3 · input + 1) mod vocab, so the mapping can be learned.
void write_sequence_files(const std::filesystem::path& dir, int64_t train, int64_t test,
                          int64_t vocab, int64_t max_length, uint32_t seed);

}  // namespace exfusion::testing
