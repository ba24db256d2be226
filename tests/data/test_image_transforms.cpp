// Per-image transforms against their definitions: Pillow's resampling on hand-checked cases
// (the Python test compares it with Pillow itself), the random-resized-crop box's bounds and
// distribution, the centre crop's offsets and random erasing's area bounds.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "exfusion/data/image_transforms.h"

namespace exfusion {
namespace {

Image gradient(int64_t h, int64_t w, int64_t c) {
  Image image(h, w, c);
  for (int64_t y = 0; y < h; ++y) {
    for (int64_t x = 0; x < w; ++x) {
      for (int64_t k = 0; k < c; ++k)
        image.at(y, x, k) = static_cast<uint8_t>((7 * y + 3 * x + 50 * k) % 256);
    }
  }
  return image;
}

TEST(ImageResize, KeepsAConstantImageConstantAtAnyScale) {
  const Image flat(17, 23, 3, 131);
  for (auto interpolation : {Interpolation::Bilinear, Interpolation::Bicubic}) {
    for (auto [h, w] : {std::pair<int64_t, int64_t>{5, 9}, {40, 31}, {17, 50}}) {
      const auto out = resize(flat, h, w, interpolation);
      ASSERT_EQ(out.height, h);
      ASSERT_EQ(out.width, w);
      for (auto v : out.pixels) ASSERT_EQ(v, 131);
    }
  }
}

TEST(ImageResize, HalvingWithBilinearUsesPillowsWidenedTriangle) {
  // Downscaling 4 -> 2 widens the triangle filter to support 2 (scale 2). Output pixel 0 has
  // centre 1.0: inputs 0..2 at distances (x + 0.5 - 1) / 2 = -0.25, 0.25, 0.75 weigh 0.75,
  // 0.75, 0.25 (sum 1.75): (10·0.75 + 20·0.75 + 101·0.25) / 1.75 = 27.29 -> 27. Output 1 has
  // centre 3.0: inputs 1..3 weigh 0.25, 0.75, 0.75: (5 + 75.75 + 150) / 1.75 = 131.86 -> 132.
  Image row(1, 4, 1);
  row.pixels = {10, 20, 101, 200};
  const auto out = resize(row, 1, 2, Interpolation::Bilinear);
  EXPECT_EQ(out.pixels[0], 27);
  EXPECT_EQ(out.pixels[1], 132);
}

TEST(ImageResize, SameSizeIsTheIdentity) {
  const auto image = gradient(9, 11, 3);
  EXPECT_EQ(resize(image, 9, 11, Interpolation::Bicubic).pixels, image.pixels);
}

TEST(ImageCrop, FlipTwiceIsTheIdentityAndCropTakesTheWindow) {
  auto image = gradient(6, 7, 3);
  const auto original = image.pixels;
  flip_horizontal(image);
  EXPECT_EQ(image.at(2, 0, 1), gradient(6, 7, 3).at(2, 6, 1));
  flip_horizontal(image);
  EXPECT_EQ(image.pixels, original);
  const auto window = crop(image, 2, 3, 3, 2);
  EXPECT_EQ(window.at(0, 0, 2), image.at(2, 3, 2));
  EXPECT_EQ(window.at(2, 1, 0), image.at(4, 4, 0));
}

TEST(CentreCrop, ResizesTheShorterSideAndCropsTheMiddle) {
  // timm's eval transform at 224 px and crop_pct 0.875: shorter side 256, crop offset 16.
  const Image image(300, 400, 3, 9);
  const auto out = resize_and_centre_crop(image, 224, 0.875, Interpolation::Bicubic);
  EXPECT_EQ(out.height, 224);
  EXPECT_EQ(out.width, 224);
  // A 32 × 32 image at ratio 1 is left as it is.
  const auto small = gradient(32, 32, 1);
  EXPECT_EQ(resize_and_centre_crop(small, 32, 1.0, Interpolation::Bicubic).pixels, small.pixels);
  // At ratio 0.8 a 40-px image is already 40 = floor(32 / 0.8): the centre 32 px, offset 4.
  const auto forty = gradient(40, 40, 1);
  const auto centre = resize_and_centre_crop(forty, 32, 0.8, Interpolation::Bicubic);
  EXPECT_EQ(centre.at(0, 0, 0), forty.at(4, 4, 0));
  EXPECT_EQ(centre.at(31, 31, 0), forty.at(35, 35, 0));
}

TEST(RandomResizedCrop, BoxesLieInsideWithTheStatedScaleAndRatio) {
  const double scale[2] = {0.08, 1.0}, ratio[2] = {3.0 / 4.0, 4.0 / 3.0};
  // Square, so that rejecting boxes that do not fit is symmetric in the aspect ratio (on a wide
  // image wide boxes fit more often, and torchvision's accepted ratios lean wide too).
  const int64_t h = 256, w = 256;
  double log_ratio_sum = 0;
  int inside_range = 0;
  const int draws = 4000;
  for (int i = 0; i < draws; ++i) {
    auto random = sample_random(1, 0, 0, i);
    const auto box = random_resized_crop_box(h, w, scale, ratio, random);
    ASSERT_GE(box.top, 0);
    ASSERT_GE(box.left, 0);
    ASSERT_GT(box.height, 0);
    ASSERT_GT(box.width, 0);
    ASSERT_LE(box.top + box.height, h);
    ASSERT_LE(box.left + box.width, w);
    const double area = static_cast<double>(box.height * box.width) / (h * w);
    const double aspect = static_cast<double>(box.width) / box.height;
    // Rounding each side to whole pixels moves the area and ratio by at most a pixel's share.
    const double slack = 2.0 / std::min(box.height, box.width);
    if (area >= scale[0] * (1 - slack) && area <= 1.0 && aspect >= ratio[0] * (1 - slack) &&
        aspect <= ratio[1] * (1 + slack)) {
      ++inside_range;
    }
    log_ratio_sum += std::log(aspect);
  }
  // Only the centre-crop fallback (after ten misses) may leave the ranges: rare.
  EXPECT_GE(inside_range, draws * 99 / 100);
  // log(aspect) is uniform on [log 3/4, log 4/3], symmetric around 0: its mean's standard error
  // is 0.166 / sqrt(4000) = 0.0026; 0.02 is more than seven of them.
  EXPECT_NEAR(log_ratio_sum / draws, 0.0, 0.02);
}

TEST(RandomErasing, ErasesOneBoxWithinTheAreaBoundsOrNothing) {
  const int64_t c = 3, h = 64, w = 48;
  int erased_draws = 0;
  for (int i = 0; i < 500; ++i) {
    std::vector<float> planes(static_cast<size_t>(c * h * w), 7.0f);
    auto random = sample_random(3, 1, 2, i);
    random_erasing(planes.data(), c, h, w, 0.5, random);
    const auto changed =
        std::count_if(planes.begin(), planes.end(), [](float v) { return v != 7.0f; });
    if (changed == 0) continue;
    ++erased_draws;
    const double fraction = static_cast<double>(changed) / static_cast<double>(c * h * w);
    // Box sides are rounded to pixels: allow one row and column of slack around [0.02, 1/3].
    const double slack = static_cast<double>(h + w) / (h * w);
    EXPECT_GE(fraction, 0.02 - slack);
    EXPECT_LE(fraction, 1.0 / 3.0 + slack);
  }
  // p = 0.5 over 500 draws: 250 ± 11 (one standard deviation); 180..320 is over six of them.
  EXPECT_GT(erased_draws, 180);
  EXPECT_LT(erased_draws, 320);
  std::vector<float> untouched(static_cast<size_t>(c * h * w), 1.0f);
  auto random = sample_random(3, 1, 2, 0);
  random_erasing(untouched.data(), c, h, w, 0.0, random);
  EXPECT_TRUE(std::all_of(untouched.begin(), untouched.end(), [](float v) { return v == 1.0f; }));
}

TEST(Normalisation, ScalesAndShiftsEachChannel) {
  Image image(1, 2, 3);
  image.pixels = {0, 255, 51, 255, 0, 102};
  const float mean[3] = {0.5f, 0.0f, 0.2f}, std[3] = {0.5f, 1.0f, 0.1f};
  std::vector<float> out(6);
  to_normalised_planar(image, mean, std, out.data());
  EXPECT_NEAR(out[0], -1.0f, 1e-6);  // (0 - 0.5) / 0.5
  EXPECT_NEAR(out[1], 1.0f, 1e-6);   // (1 - 0.5) / 0.5
  EXPECT_NEAR(out[2], 1.0f, 1e-6);
  EXPECT_NEAR(out[3], 0.0f, 1e-6);
  EXPECT_NEAR(out[4], 0.0f, 1e-5);  // (0.2 - 0.2) / 0.1
  EXPECT_NEAR(out[5], 2.0f, 1e-5);  // (0.4 - 0.2) / 0.1
}

}  // namespace
}  // namespace exfusion
