// Choosing the next token (workflows/generate.h): greedy is the argmax whatever top-k and
// top-p say; top-k 1 and a top-p below the largest probability reduce sampling to the argmax;
// draws stay among the top-k and repeat under the same seed; bad sampling options are refused
// by `exfusion generate` before a model is read.
#include "exfusion/workflows/generate.h"

#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include <set>

#include "exfusion/util/error.h"

namespace exfusion {
namespace {

at::Generator seeded(uint64_t seed) { return at::make_generator<at::CPUGeneratorImpl>(seed); }

TEST(NextToken, GreedyAndDegenerateSamplingTakeTheArgmax) {
  const auto logits = torch::tensor({0.5, 3.0, 2.9, -1.0, 2.95});
  auto generator = seeded(1);
  SamplingOptions greedy;
  greedy.top_k = 3;
  EXPECT_EQ(next_token(logits, greedy, generator), 1);
  SamplingOptions top_one;
  top_one.temperature = 1.0;
  top_one.top_k = 1;
  SamplingOptions narrow_nucleus;
  narrow_nucleus.temperature = 1.0;
  narrow_nucleus.top_p = 0.01;  // below the largest probability: that token alone
  for (int draw = 0; draw < 20; ++draw) {
    EXPECT_EQ(next_token(logits, top_one, generator), 1);
    EXPECT_EQ(next_token(logits, narrow_nucleus, generator), 1);
  }
}

TEST(NextToken, DrawsStayAmongTheTopKAndRepeatUnderTheSameSeed) {
  const auto logits = torch::tensor({0.5, 3.0, 2.9, -1.0, 2.95, 0.0});
  SamplingOptions options;
  options.temperature = 1.5;
  options.top_k = 3;
  auto first = seeded(7), second = seeded(7);
  std::set<int64_t> seen;
  for (int draw = 0; draw < 200; ++draw) {
    const auto token = next_token(logits, options, first);
    EXPECT_EQ(token, next_token(logits, options, second));
    seen.insert(token);
  }
  // Tokens 1, 4 and 2, each drawn with probability above 0.3 in 200 draws: all three appear
  // (a miss has probability under 3 · 0.7²⁰⁰).
  EXPECT_EQ(seen, (std::set<int64_t>{1, 2, 4}));
}

TEST(GenerateText, BadSamplingOptionsAreRefusedFirst) {
  for (const auto& change : std::vector<std::function<void(GenerateRun&)>>{
           [](GenerateRun& run) { run.max_new_tokens = 0; },
           [](GenerateRun& run) { run.sampling.temperature = -1; },
           [](GenerateRun& run) { run.sampling.top_k = -2; },
           [](GenerateRun& run) { run.sampling.top_p = 0; },
           [](GenerateRun& run) { run.sampling.top_p = 1.5; }}) {
    GenerateRun run;
    run.path = "/nonexistent/run";  // never read: the options are checked first
    run.prompt = "x";
    change(run);
    try {
      generate_text(run);
      ADD_FAILURE() << "accepted";
    } catch (const InputError& error) {
      EXPECT_EQ(std::string(error.what()).find("/nonexistent"), std::string::npos) << error.what();
    }
  }
}

}  // namespace
}  // namespace exfusion
