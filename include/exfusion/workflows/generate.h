// `exfusion generate` as a library call: text continued by a decoder language model (a dense or
// fused Llama, or a training state: an MoE or an unfused ExFusion model) one token at a time
// through its key/value cache (models/decoding.h), greedy or sampled with temperature, top-k and
// top-p from a seeded generator.
#pragma once
#include <torch/types.h>

#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

namespace exfusion {

struct SamplingOptions {
  double temperature = 0.0;  // 0: greedy (the most likely token)
  int64_t top_k = 0;         // sample among the k most likely; 0: all
  double top_p = 1.0;        // sample among the most likely whose probabilities reach p
  int64_t seed = 0;
};

// The next token from the logits of one position [vocab]: the most likely with temperature 0,
// else drawn from softmax(logits / temperature) cut to top_k and top_p (at least one token is
// always kept), from `generator`.
int64_t next_token(const torch::Tensor& logits, const SamplingOptions& options,
                   at::Generator& generator);

struct GenerateRun {
  std::filesystem::path path;  // a run directory or a checkpoint (a model, else the state)
  std::string prompt;
  int64_t max_new_tokens = 64;
  SamplingOptions sampling;
  std::filesystem::path tokenizer;  // default: the run's data.tokenizer
  bool ignore_eos = false;          // generate max_new_tokens whatever comes (benchmarks)
};
// {prompt_ids, generated_ids, completion, text, stopped ("eos" or "max_new_tokens"), eos_id,
//  new_tokens, tokens_per_s}.
nlohmann::json generate_text(const GenerateRun& run);

}  // namespace exfusion
