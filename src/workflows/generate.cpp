// `exfusion generate` (see generate.h).
#include "exfusion/workflows/generate.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/ops/multinomial.h>
#include <c10/core/InferenceMode.h>

#include <chrono>
#include <vector>

#include "exfusion/models/decoding.h"
#include "exfusion/text/tokenizer.h"
#include "exfusion/train/run_files.h"
#include "exfusion/util/error.h"

namespace exfusion {
namespace fs = std::filesystem;

int64_t next_token(const torch::Tensor& logits, const SamplingOptions& options,
                   at::Generator& generator) {
  const auto scores = logits.to(torch::kFloat32).reshape({-1});
  if (options.temperature <= 0.0) return scores.argmax().item<int64_t>();
  // Sorted most likely first, so top-k and top-p both keep a prefix.
  auto [sorted, order] = (scores / options.temperature).sort(/*dim=*/0, /*descending=*/true);
  int64_t keep = sorted.size(0);
  if (options.top_k > 0) keep = std::min(keep, options.top_k);
  if (options.top_p < 1.0) {
    const auto cumulative = sorted.narrow(0, 0, keep).softmax(0).cumsum(0);
    // The smallest prefix whose probability reaches top_p: the tokens before the first that
    // does, and it.
    const auto below = (cumulative < options.top_p).sum().item<int64_t>();
    keep = std::min(keep, below + 1);
  }
  const auto probabilities = sorted.narrow(0, 0, keep).softmax(0);
  const auto drawn = at::multinomial(probabilities, 1, /*replacement=*/false, generator);
  return order[drawn.item<int64_t>()].item<int64_t>();
}

namespace {

void check_sampling(const GenerateRun& run) {
  const auto& s = run.sampling;
  if (run.max_new_tokens < 1) {
    throw InputError("--max-new-tokens " + std::to_string(run.max_new_tokens) +
                     ": expected at least 1");
  }
  if (!(s.temperature >= 0.0)) {
    throw InputError("--temperature " + std::to_string(s.temperature) +
                     ": expected 0 (greedy) or a positive temperature");
  }
  if (s.top_k < 0) throw InputError("--top-k: expected 0 (all tokens) or a positive count");
  if (!(s.top_p > 0.0 && s.top_p <= 1.0)) {
    throw InputError("--top-p " + std::to_string(s.top_p) + ": expected a value in (0, 1]");
  }
}

}  // namespace

nlohmann::json generate_text(const GenerateRun& run) {
  check_sampling(run);
  // The dense model where the run has one, else its training state (an MoE has no dense form).
  const auto path = fs::is_directory(run.path) && !fs::exists(run.path / kModelFile)
                        ? checkpoint_path(run.path, /*prefer_state=*/true)
                        : checkpoint_path(run.path, /*prefer_state=*/false);
  const auto checkpoint = load_checkpoint(path);
  auto model = model_from_checkpoint(checkpoint, path);
  auto* decoder = dynamic_cast<DecodesIncrementally*>(model.get());
  if (decoder == nullptr) {
    throw InputError(path.string() + ": model.kind " + checkpoint.config.model.kind +
                     " does not generate text (a decoder language model does: llama)");
  }
  auto tokenizer_path = run.tokenizer;
  if (tokenizer_path.empty()) {
    tokenizer_path =
        to_json(checkpoint.config).value("/data/tokenizer"_json_pointer, std::string());
    if (tokenizer_path.empty()) {
      throw InputError(path.string() + ": its run names no data.tokenizer: pass --tokenizer");
    }
  }
  const Tokenizer tokenizer(tokenizer_path, 0);
  if (tokenizer.size() > checkpoint.config.model.options->num_outputs()) {
    throw InputError(tokenizer_path.string() + ": " + std::to_string(tokenizer.size()) +
                     " pieces, more than the model's " +
                     std::to_string(checkpoint.config.model.options->num_outputs()) + " token ids");
  }
  const auto prompt_ids = tokenizer.encode(run.prompt);
  if (prompt_ids.empty()) throw InputError("--prompt: no tokens in it");

  const c10::InferenceMode inference;
  model->eval();
  auto generator =
      at::make_generator<at::CPUGeneratorImpl>(static_cast<uint64_t>(run.sampling.seed));
  const auto capacity = static_cast<int64_t>(prompt_ids.size()) + run.max_new_tokens;
  auto state = decoder->start_decoding(1, capacity);
  const auto start = std::chrono::steady_clock::now();
  auto logits = decoder->decode(torch::tensor(prompt_ids).unsqueeze(0), *state);
  std::vector<int64_t> generated;
  std::string stopped = "max_new_tokens";
  while (static_cast<int64_t>(generated.size()) < run.max_new_tokens) {
    const auto token = next_token(logits[0][-1], run.sampling, generator);
    generated.push_back(token);
    if (token == tokenizer.eos_id() && !run.ignore_eos) {
      stopped = "eos";
      break;
    }
    if (static_cast<int64_t>(generated.size()) == run.max_new_tokens) break;
    logits = decoder->decode(torch::tensor({token}).unsqueeze(0), *state);
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  auto text_ids = generated;
  if (stopped == "eos") text_ids.pop_back();
  const auto completion = tokenizer.decode(text_ids);
  auto all_ids = prompt_ids;
  all_ids.insert(all_ids.end(), text_ids.begin(), text_ids.end());
  return {{"prompt_ids", prompt_ids},
          {"generated_ids", generated},
          {"completion", completion},
          {"text", tokenizer.decode(all_ids)},
          {"stopped", stopped},
          {"eos_id", tokenizer.eos_id()},
          {"new_tokens", generated.size()},
          {"tokens_per_s", static_cast<double>(generated.size()) / seconds}};
}

}  // namespace exfusion
