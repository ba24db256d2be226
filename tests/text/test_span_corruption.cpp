// Span corruption against values the published algorithm gives (nanoT5's lengths, computed
// with its Python function), a hand-worked input/target pair, and the mask's invariants: its
// noise count and span count, non-noise first, noise last, every span at least one token, the
// same mask for the same stream. The pytest tests/python/test_span_corruption.py compares the
// masks' statistics and the pairs with a NumPy reference.
#include <gtest/gtest.h>

#include <tuple>
#include <vector>

#include "exfusion/text/span_corruption.h"

namespace exfusion {
namespace {

TEST(SpanCorruption, LengthsAreNanoT5s) {
  using Case = std::tuple<int64_t, double, double, SpanCorruptionLengths>;
  for (const auto& [input, density, span, expected] :
       {Case{512, 0.15, 3.0, {568, 512, 114}}, Case{128, 0.15, 3.0, {141, 128, 29}},
        Case{64, 0.15, 3.0, {70, 64, 14}}, Case{1024, 0.15, 3.0, {1137, 1024, 229}},
        Case{512, 0.5, 3.0, {766, 512, 512}}, Case{256, 0.3, 5.0, {336, 256, 122}}}) {
    const auto lengths = span_corruption_lengths(input, density, span);
    EXPECT_EQ(lengths.raw, expected.raw) << input << " " << density;
    EXPECT_EQ(lengths.inputs, expected.inputs) << input << " " << density;
    EXPECT_EQ(lengths.targets, expected.targets) << input << " " << density;
  }
}

// The spans of `mask`: (is noise, length) in order.
std::vector<std::pair<bool, int64_t>> spans_of(const std::vector<bool>& mask) {
  std::vector<std::pair<bool, int64_t>> spans;
  for (size_t i = 0; i < mask.size(); ++i) {
    if (i == 0 || mask[i] != mask[i - 1]) spans.emplace_back(mask[i], 0);
    ++spans.back().second;
  }
  return spans;
}

TEST(SpanCorruption, MasksHaveTheirNoiseInRoundedSpans) {
  for (int64_t sample = 0; sample < 200; ++sample) {
    auto random = sample_random(11, 0, 3, sample);
    const auto mask = random_spans_noise_mask(568, 0.15, 3.0, random);
    ASSERT_EQ(mask.size(), 568U);
    int64_t noise = 0;
    for (const bool flag : mask) noise += flag ? 1 : 0;
    EXPECT_EQ(noise, 85);  // round(568 · 0.15)
    const auto spans = spans_of(mask);
    ASSERT_EQ(spans.size(), 56U);  // 28 noise spans (round(85 / 3)), each after a non-noise one
    for (size_t i = 0; i < spans.size(); ++i) {
      EXPECT_EQ(spans[i].first, i % 2 == 1) << "span " << i;
      EXPECT_GE(spans[i].second, 1);
    }
    // 568 raw tokens give exactly nanoT5's 512 inputs and 114 targets.
    std::vector<int64_t> tokens(568, 5);
    const auto pair = corrupt_spans(tokens, mask, 32099, 1);
    EXPECT_EQ(pair.inputs.size(), 512U);
    EXPECT_EQ(pair.targets.size(), 114U);
  }
}

TEST(SpanCorruption, TheSameStreamGivesTheSameMask) {
  auto first = sample_random(4, 1, 7, 2), again = sample_random(4, 1, 7, 2),
       other = sample_random(4, 1, 7, 3);
  const auto mask = random_spans_noise_mask(141, 0.15, 3.0, first);
  EXPECT_EQ(mask, random_spans_noise_mask(141, 0.15, 3.0, again));
  EXPECT_NE(mask, random_spans_noise_mask(141, 0.15, 3.0, other));
}

// Degenerate lengths keep one noise and one non-noise token and one span.
TEST(SpanCorruption, ShortChunksStillGetOneSpan) {
  auto random = sample_random(0, 0, 0, 0);
  const auto mask = random_spans_noise_mask(2, 0.15, 3.0, random);
  EXPECT_EQ(mask, (std::vector<bool>{false, true}));
}

// Worked by hand from transformers' create_sentinel_ids and filter_input_ids: the inputs keep
// the non-noise tokens with <extra_id_k> (32099 − k) for the k-th noise span; the targets hold
// a sentinel for each non-noise span, then the noise after it.
TEST(SpanCorruption, InputsAndTargetsAsT5BuildsThem) {
  const std::vector<int64_t> tokens{10, 11, 12, 13, 14, 15, 16, 17, 18, 19};
  const std::vector<bool> mask{false, false, true, true, false, false, false, true, false, false};
  const auto pair = corrupt_spans(tokens, mask, 32099, 1);
  EXPECT_EQ(pair.inputs, (std::vector<int64_t>{10, 11, 32099, 14, 15, 16, 32098, 18, 19, 1}));
  EXPECT_EQ(pair.targets, (std::vector<int64_t>{32099, 12, 13, 32098, 17, 32097, 1}));
}

}  // namespace
}  // namespace exfusion
