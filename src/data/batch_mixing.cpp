// Mixup / CutMix (see batch_mixing.h), following timm.data.mixup.Mixup._params_per_batch,
// _mix_batch and mixup_target; the reversed batch is read from a copy so that in-place mixing
// of sample i never sees an already mixed partner.
#include "exfusion/data/batch_mixing.h"

#include <algorithm>
#include <cmath>

namespace exfusion {
namespace {

// Marsaglia and Tsang's method; shapes below 1 through Gamma(a + 1) · U^(1/a).
double sample_gamma(double shape, SampleRandom& random) {
  if (shape < 1.0) {
    const double u = 1.0 - random.uniform();  // (0, 1]
    return sample_gamma(shape + 1.0, random) * std::pow(u, 1.0 / shape);
  }
  const double d = shape - 1.0 / 3.0, c = 1.0 / std::sqrt(9.0 * d);
  for (;;) {
    double x = 0, v = 0;
    do {
      x = random.normal(0, 1);
      v = 1.0 + c * x;
    } while (v <= 0);
    v = v * v * v;
    const double u = 1.0 - random.uniform();
    if (std::log(u) < 0.5 * x * x + d - d * v + d * std::log(v)) return d * v;
  }
}

}  // namespace

double sample_beta(double alpha, double beta, SampleRandom& random) {
  const double x = sample_gamma(alpha, random), y = sample_gamma(beta, random);
  return x / (x + y);
}

MixDecision cutmix_box(int64_t height, int64_t width, double lambda, SampleRandom& random) {
  const double ratio = std::sqrt(1.0 - lambda);
  const auto cut_h = static_cast<int64_t>(static_cast<double>(height) * ratio);
  const auto cut_w = static_cast<int64_t>(static_cast<double>(width) * ratio);
  // numpy's randint(0, n) excludes n.
  const int64_t cy = random.integer(0, height - 1), cx = random.integer(0, width - 1);
  MixDecision d;
  d.cutmix = true;
  d.top = std::clamp<int64_t>(cy - cut_h / 2, 0, height);
  d.bottom = std::clamp<int64_t>(cy + cut_h / 2, 0, height);
  d.left = std::clamp<int64_t>(cx - cut_w / 2, 0, width);
  d.right = std::clamp<int64_t>(cx + cut_w / 2, 0, width);
  const double box = static_cast<double>((d.bottom - d.top) * (d.right - d.left));
  d.lambda = 1.0 - box / static_cast<double>(height * width);
  return d;
}

MixDecision mix_batch(float* images, int64_t batch, int64_t channels, int64_t height, int64_t width,
                      const int64_t* labels, int64_t classes, const MixingOptions& options,
                      SampleRandom& random, std::vector<float>& soft_targets) {
  MixDecision decision;
  if (options.enabled() && random.bernoulli(options.probability)) {
    bool use_cutmix = options.mixup_alpha <= 0;
    if (options.mixup_alpha > 0 && options.cutmix_alpha > 0) {
      use_cutmix = random.bernoulli(options.switch_probability);
    }
    const double alpha = use_cutmix ? options.cutmix_alpha : options.mixup_alpha;
    const double lambda = sample_beta(alpha, alpha, random);
    if (use_cutmix) {
      decision = cutmix_box(height, width, lambda, random);
    } else {
      decision.lambda = lambda;
    }
  }
  const int64_t sample = channels * height * width;
  if (decision.lambda < 1.0) {
    const std::vector<float> original(images, images + batch * sample);
    for (int64_t i = 0; i < batch; ++i) {
      float* dst = images + i * sample;
      const float* partner = original.data() + (batch - 1 - i) * sample;
      if (decision.cutmix) {
        for (int64_t k = 0; k < channels; ++k) {
          for (int64_t y = decision.top; y < decision.bottom; ++y) {
            const int64_t row = (k * height + y) * width;
            std::copy(partner + row + decision.left, partner + row + decision.right,
                      dst + row + decision.left);
          }
        }
      } else {
        const auto lambda = static_cast<float>(decision.lambda);
        for (int64_t p = 0; p < sample; ++p) dst[p] = lambda * dst[p] + (1 - lambda) * partner[p];
      }
    }
  }
  const double off = options.label_smoothing / static_cast<double>(classes);
  const double on = 1.0 - options.label_smoothing + off;
  soft_targets.assign(static_cast<size_t>(batch * classes), static_cast<float>(off));
  for (int64_t i = 0; i < batch; ++i) {
    float* row = soft_targets.data() + i * classes;
    // λ·(on at y, off elsewhere) + (1−λ)·(on at y', off elsewhere).
    row[labels[i]] += static_cast<float>(decision.lambda * (on - off));
    row[labels[batch - 1 - i]] += static_cast<float>((1.0 - decision.lambda) * (on - off));
  }
  return decision;
}

}  // namespace exfusion
