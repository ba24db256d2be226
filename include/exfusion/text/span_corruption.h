// T5's span corruption exactly as T5 and nanoT5 define it (Raffel et al. 2020; nanoT5's copy of
// transformers' run_t5_mlm_flax.py): a chunk of raw tokens gets a noise mask of
// round(length · density) tokens in round(noise / mean span) spans, starting with a non-noise
// span; the inputs keep the non-noise tokens with one sentinel per noise span, the targets the
// noise tokens after their span's sentinel, each ended by EOS. Rounding is NumPy's (half to
// even), and the random segmentation draws from the sample's own stream.
#pragma once
#include <cstdint>
#include <vector>

#include "exfusion/data/sample_random.h"

namespace exfusion {

struct SpanCorruptionLengths {
  int64_t raw = 0;      // tokens taken from the corpus per sample (568 for 512 inputs)
  int64_t inputs = 0;   // encoder tokens, EOS included (512)
  int64_t targets = 0;  // decoder tokens, EOS included (114)
};

// nanoT5's compute_input_and_target_lengths: the longest raw chunk whose inputs fit
// `input_length`, and its targets' length.
SpanCorruptionLengths span_corruption_lengths(int64_t input_length, double noise_density,
                                              double mean_noise_span_length);

// random_spans_noise_mask: `length` flags, true for noise. At least one noise and one
// non-noise token and one noise span; the spans' lengths are random segmentations of the noise
// and the non-noise tokens (every span at least one token), interleaved non-noise first.
std::vector<bool> random_spans_noise_mask(int64_t length, double noise_density,
                                          double mean_noise_span_length, SampleRandom& random);

struct CorruptedSpans {
  std::vector<int64_t> inputs;
  std::vector<int64_t> targets;
};

// The inputs and targets of `tokens` under `noise_mask` (same length): the k-th noise span
// (from 0) is replaced by `first_sentinel − k` in the inputs, and the k-th non-noise span by
// the same sentinel in the targets, as transformers' T5 tokenizer numbers <extra_id_k>
// downwards from the top of its vocabulary; both end with `eos`.
CorruptedSpans corrupt_spans(const std::vector<int64_t>& tokens,
                             const std::vector<bool>& noise_mask, int64_t first_sentinel,
                             int64_t eos);

}  // namespace exfusion
