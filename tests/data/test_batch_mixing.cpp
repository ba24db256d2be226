// Mixup and CutMix against timm's definitions: soft targets that sum to one and carry λ and
// the smoothing, Mixup's blend, CutMix's box whose area is exactly 1 − λ, and the Beta draws'
// mean.
#include <gtest/gtest.h>

#include <cmath>
#include <numeric>

#include "exfusion/data/batch_mixing.h"

namespace exfusion {
namespace {

constexpr int64_t kBatch = 4, kChannels = 2, kSide = 8, kClasses = 5;

std::vector<float> numbered_images() {
  std::vector<float> images(static_cast<size_t>(kBatch * kChannels * kSide * kSide));
  // Sample i is the constant i + 1: a mixed pixel tells which samples it came from.
  for (int64_t i = 0; i < kBatch; ++i) {
    std::fill_n(images.begin() + i * kChannels * kSide * kSide, kChannels * kSide * kSide,
                static_cast<float>(i + 1));
  }
  return images;
}

TEST(Mixup, BlendsEachSampleWithTheReversedBatchAndMixesTheTargets) {
  auto images = numbered_images();
  const int64_t labels[kBatch] = {0, 1, 2, 3};
  MixingOptions options;
  options.mixup_alpha = 0.8;
  options.label_smoothing = 0.1;
  auto random = sample_random(5, 0, 0, -1);
  std::vector<float> soft;
  const auto d = mix_batch(images.data(), kBatch, kChannels, kSide, kSide, labels, kClasses,
                           options, random, soft);
  ASSERT_FALSE(d.cutmix);
  ASSERT_GT(d.lambda, 0.0);
  ASSERT_LT(d.lambda, 1.0);
  const int64_t sample = kChannels * kSide * kSide;
  for (int64_t i = 0; i < kBatch; ++i) {
    const double expected = d.lambda * (i + 1) + (1 - d.lambda) * (kBatch - i);
    EXPECT_NEAR(images[i * sample + 17], expected, 1e-5);
    const float* row = soft.data() + i * kClasses;
    EXPECT_NEAR(std::accumulate(row, row + kClasses, 0.0), 1.0, 1e-6);
    // off = 0.1 / 5 = 0.02, on = 0.92: λ·on + (1 − λ)·off at y, the reverse at y'.
    EXPECT_NEAR(row[labels[i]], d.lambda * 0.92 + (1 - d.lambda) * 0.02, 1e-6);
    EXPECT_NEAR(row[labels[kBatch - 1 - i]], (1 - d.lambda) * 0.92 + d.lambda * 0.02, 1e-6);
    EXPECT_NEAR(row[4], 0.02, 1e-7);
  }
}

TEST(CutMix, PastesABoxWhoseAreaIsOneMinusLambda) {
  int cut_batches = 0;
  for (int seed = 0; seed < 50; ++seed) {
    auto images = numbered_images();
    const int64_t labels[kBatch] = {4, 3, 2, 1};
    MixingOptions options;
    options.cutmix_alpha = 1.0;
    auto random = sample_random(seed, 0, 0, -1);
    std::vector<float> soft;
    const auto d = mix_batch(images.data(), kBatch, kChannels, kSide, kSide, labels, kClasses,
                             options, random, soft);
    ASSERT_TRUE(d.cutmix);
    const int64_t sample = kChannels * kSide * kSide;
    int64_t pasted = 0;
    for (int64_t p = 0; p < sample; ++p) pasted += images[p] == static_cast<float>(kBatch);
    // λ was recomputed from the clipped box: exactly the share of sample 0 left unpasted.
    EXPECT_NEAR(static_cast<double>(pasted) / sample, 1.0 - d.lambda, 1e-12);
    EXPECT_EQ(pasted, kChannels * (d.bottom - d.top) * (d.right - d.left));
    for (int64_t i = 0; i < kBatch; ++i) {
      const float* row = soft.data() + i * kClasses;
      EXPECT_NEAR(std::accumulate(row, row + kClasses, 0.0), 1.0, 1e-6);
    }
    cut_batches += d.lambda < 1.0;
  }
  EXPECT_GT(cut_batches, 25);  // a box of zero area needs λ ≈ 1: rare under Beta(1, 1)
}

TEST(Mixing, SwitchesBetweenMixupAndCutMixAtTheStatedRate) {
  MixingOptions options;
  options.mixup_alpha = 0.8;
  options.cutmix_alpha = 1.0;
  int cutmix = 0;
  const int draws = 2000;
  for (int seed = 0; seed < draws; ++seed) {
    auto images = numbered_images();
    const int64_t labels[kBatch] = {0, 0, 1, 1};
    auto random = sample_random(seed, 1, 2, -1);
    std::vector<float> soft;
    cutmix += mix_batch(images.data(), kBatch, kChannels, kSide, kSide, labels, kClasses, options,
                        random, soft)
                  .cutmix;
  }
  // Switch probability 0.5: 1000 ± 22 (one sd); ±150 is almost seven of them.
  EXPECT_NEAR(cutmix, draws / 2, 150);
}

TEST(BetaDraws, HaveTheBetaMean) {
  for (const auto [a, b] : {std::pair{0.8, 0.8}, std::pair{1.0, 1.0}, std::pair{2.0, 5.0}}) {
    SampleRandom random(17);
    double sum = 0;
    const int n = 20000;
    for (int i = 0; i < n; ++i) {
      const double x = sample_beta(a, b, random);
      ASSERT_GE(x, 0.0);
      ASSERT_LE(x, 1.0);
      sum += x;
    }
    // sd ≤ 0.5, so the mean's standard error is at most 0.0035; 0.02 is over five of them.
    EXPECT_NEAR(sum / n, a / (a + b), 0.02) << a << ", " << b;
  }
}

TEST(Mixing, OffLeavesImagesAndGivesSmoothedOneHotTargets) {
  auto images = numbered_images();
  const auto original = images;
  const int64_t labels[kBatch] = {0, 1, 2, 3};
  MixingOptions options;
  options.mixup_alpha = 0.8;
  options.probability = 0.0;
  options.label_smoothing = 0.0;
  auto random = sample_random(0, 0, 0, -1);
  std::vector<float> soft;
  const auto d = mix_batch(images.data(), kBatch, kChannels, kSide, kSide, labels, kClasses,
                           options, random, soft);
  EXPECT_EQ(d.lambda, 1.0);
  EXPECT_EQ(images, original);
  for (int64_t i = 0; i < kBatch; ++i) EXPECT_EQ(soft[i * kClasses + labels[i]], 1.0f);
}

}  // namespace
}  // namespace exfusion
