// Span corruption (see span_corruption.h).
#include "exfusion/text/span_corruption.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

namespace exfusion {
namespace {

// NumPy's np.round and Python's round: halves to even (the default floating-point rounding).
int64_t round_half_even(double value) { return static_cast<int64_t>(std::nearbyint(value)); }

std::pair<int64_t, int64_t> inputs_and_targets(int64_t raw, double density, double mean_span) {
  const int64_t noise = round_half_even(static_cast<double>(raw) * density);
  const int64_t nonnoise = raw - noise;
  const int64_t spans = round_half_even(static_cast<double>(noise) / mean_span);
  // Inputs: every non-noise token, a sentinel per span, EOS; targets: the noise likewise.
  return {nonnoise + spans + 1, noise + spans + 1};
}

// `items` split into `segments` non-empty runs at random: the lengths of the runs, in order.
// A Fisher-Yates shuffle of (segments − 1) break flags among the items − 1 gaps.
std::vector<int64_t> random_segmentation(int64_t items, int64_t segments, SampleRandom& random) {
  std::vector<bool> breaks(static_cast<size_t>(std::max<int64_t>(items - 1, 0)), false);
  for (int64_t i = 0; i < segments - 1; ++i) breaks[static_cast<size_t>(i)] = true;
  for (int64_t i = static_cast<int64_t>(breaks.size()) - 1; i > 0; --i) {
    const auto j = static_cast<size_t>(random.integer(0, i));
    const bool swapped = breaks[j];
    breaks[j] = breaks[static_cast<size_t>(i)];
    breaks[static_cast<size_t>(i)] = swapped;
  }
  std::vector<int64_t> lengths{1};
  for (const bool starts_segment : breaks) {
    if (starts_segment) {
      lengths.push_back(1);
    } else {
      ++lengths.back();
    }
  }
  return lengths;
}

}  // namespace

SpanCorruptionLengths span_corruption_lengths(int64_t input_length, double noise_density,
                                              double mean_noise_span_length) {
  if (input_length < 2 || !(noise_density > 0 && noise_density < 1) ||
      !(mean_noise_span_length >= 1)) {
    throw std::invalid_argument(
        "span corruption needs input_length >= 2, a noise density in "
        "(0, 1) and a mean span of at least 1");
  }
  int64_t raw = input_length;
  while (inputs_and_targets(raw + 1, noise_density, mean_noise_span_length).first <= input_length) {
    ++raw;
  }
  auto [inputs, targets] = inputs_and_targets(raw, noise_density, mean_noise_span_length);
  // nanoT5's "minor hack": at density 0.5 the targets are kept no longer than the inputs.
  if (noise_density == 0.5 && targets > inputs) {
    --raw;
    --targets;
  }
  return {raw, inputs, targets};
}

std::vector<bool> random_spans_noise_mask(int64_t length, double noise_density,
                                          double mean_noise_span_length, SampleRandom& random) {
  if (length < 2) throw std::invalid_argument("a noise mask needs at least 2 tokens");
  int64_t noise = round_half_even(static_cast<double>(length) * noise_density);
  noise = std::min(std::max<int64_t>(noise, 1), length - 1);
  const int64_t nonnoise = length - noise;
  const int64_t spans = std::max<int64_t>(
      round_half_even(static_cast<double>(std::min(noise, nonnoise)) / mean_noise_span_length), 1);
  const auto noise_lengths = random_segmentation(noise, spans, random);
  const auto nonnoise_lengths = random_segmentation(nonnoise, spans, random);
  std::vector<bool> mask;
  mask.reserve(static_cast<size_t>(length));
  for (int64_t span = 0; span < spans; ++span) {
    mask.insert(mask.end(), static_cast<size_t>(nonnoise_lengths[static_cast<size_t>(span)]),
                false);
    mask.insert(mask.end(), static_cast<size_t>(noise_lengths[static_cast<size_t>(span)]), true);
  }
  return mask;
}

CorruptedSpans corrupt_spans(const std::vector<int64_t>& tokens,
                             const std::vector<bool>& noise_mask, int64_t first_sentinel,
                             int64_t eos) {
  if (tokens.size() != noise_mask.size()) {
    throw std::invalid_argument("corrupt_spans: " + std::to_string(tokens.size()) + " tokens, " +
                                std::to_string(noise_mask.size()) + " mask flags");
  }
  CorruptedSpans out;
  int64_t input_spans = 0, target_spans = 0;
  for (size_t i = 0; i < tokens.size(); ++i) {
    const bool starts = i == 0 || noise_mask[i] != noise_mask[i - 1];
    if (noise_mask[i]) {
      if (starts) out.inputs.push_back(first_sentinel - input_spans++);
      out.targets.push_back(tokens[i]);
    } else {
      if (starts) out.targets.push_back(first_sentinel - target_spans++);
      out.inputs.push_back(tokens[i]);
    }
  }
  out.inputs.push_back(eos);
  out.targets.push_back(eos);
  return out;
}

}  // namespace exfusion
