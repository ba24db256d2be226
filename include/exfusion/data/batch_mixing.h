// Mixup and CutMix as timm's Mixup applies them per batch (mode "batch"): one λ per batch,
// each sample mixed with the batch reversed, soft targets that carry the label smoothing.
// Plain C++ on the batch's planar floats: it runs in the loader's workers.
#pragma once
#include <cstdint>
#include <vector>

#include "exfusion/data/sample_random.h"

namespace exfusion {

struct MixingOptions {
  double mixup_alpha = 0.0;         // Beta(α, α) for Mixup's λ; 0 = off
  double cutmix_alpha = 0.0;        // Beta(α, α) for CutMix's λ; 0 = off
  double probability = 1.0;         // of mixing a batch at all
  double switch_probability = 0.5;  // of CutMix rather than Mixup when both are on
  double label_smoothing = 0.0;
  bool enabled() const { return mixup_alpha > 0 || cutmix_alpha > 0; }
};

// What was done to one batch: λ (after CutMix's area correction) and the box, if CutMix.
struct MixDecision {
  double lambda = 1.0;
  bool cutmix = false;
  int64_t top = 0, bottom = 0, left = 0, right = 0;  // rows [top, bottom), columns [left, right)
};

// A Beta(α, β) draw (Marsaglia–Tsang gammas), for λ.
double sample_beta(double alpha, double beta, SampleRandom& random);

// timm's cutmix_bbox_and_lam with correct_lam: a box of side √(1−λ) × the image centred
// uniformly, clipped to the image, λ recomputed from its area.
MixDecision cutmix_box(int64_t height, int64_t width, double lambda, SampleRandom& random);

// Mixes `images` [batch, channels, height, width] in place and returns the soft targets
// [batch, classes]: λ·onehot(y) + (1−λ)·onehot(reversed y), each smoothed to
// (1 − s + s/classes, s/classes). Draws from `random` only (one stream per batch).
MixDecision mix_batch(float* images, int64_t batch, int64_t channels, int64_t height, int64_t width,
                      const int64_t* labels, int64_t classes, const MixingOptions& options,
                      SampleRandom& random, std::vector<float>& soft_targets);

}  // namespace exfusion
