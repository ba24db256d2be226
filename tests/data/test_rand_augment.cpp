// RandAugment: timm's config strings, each op's invariants, hand-worked pixel values, seeded
// reproducibility, and (with EXFUSION_RAND_AUGMENT_OUT set by test_rand_augment_reference.py)
// every reference case's output on a given image, which that test compares with Pillow via timm.
#include "exfusion/data/rand_augment.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "exfusion/util/error.h"

namespace exfusion {
namespace {

const uint8_t kFill[3] = {124, 116, 104};  // timm's img_mean for ImageNet's mean

// Smooth gradients with noise: every op changes it, and no channel spans all of 0..255.
Image noisy_gradient(int64_t height, int64_t width, int64_t channels, uint64_t seed = 1) {
  Image image(height, width, channels);
  SampleRandom random(seed);
  for (int64_t y = 0; y < height; ++y) {
    for (int64_t x = 0; x < width; ++x) {
      for (int64_t c = 0; c < channels; ++c) {
        const double base = 30.0 + 150.0 * static_cast<double>(x + y + 7 * c) /
                                       static_cast<double>(height + width + 14);
        image.at(y, x, c) = static_cast<uint8_t>(base + random.uniform(0, 40));
      }
    }
  }
  return image;
}

Image grey(int64_t height, int64_t width, const std::vector<int>& values) {
  Image image(height, width, 1);
  for (size_t i = 0; i < values.size(); ++i) image.pixels[i] = static_cast<uint8_t>(values[i]);
  return image;
}

std::vector<int> values_of(const Image& image) {
  return std::vector<int>(image.pixels.begin(), image.pixels.end());
}

Image op(const std::string& name, const Image& image, double level,
         Interpolation interpolation = Interpolation::Bilinear) {
  return apply_rand_augment_op(name, image, level, kFill, interpolation);
}

std::string parse_error(const std::string& spec) {
  try {
    parse_rand_augment(spec, "data.rand_augment");
  } catch (const InputError& error) {
    return error.what();
  }
  return "(no error)";
}

TEST(RandAugmentParse, TimmRecipeString) {
  const auto options = parse_rand_augment("rand-m9-mstd0.5-inc1", "data.rand_augment");
  EXPECT_EQ(options.num_ops, 2);
  EXPECT_EQ(options.magnitude, 9);
  EXPECT_EQ(options.magnitude_std, 0.5);
  EXPECT_EQ(options.magnitude_max, 10);
  EXPECT_TRUE(options.increasing);
  EXPECT_EQ(options.probability, 0.5);
}

TEST(RandAugmentParse, EveryKey) {
  const auto options = parse_rand_augment("rand-n3-m7-mstd1.5-mmax15-inc0-p0.8", "x");
  EXPECT_EQ(options.num_ops, 3);
  EXPECT_EQ(options.magnitude, 7);
  EXPECT_EQ(options.magnitude_std, 1.5);
  EXPECT_EQ(options.magnitude_max, 15);
  EXPECT_FALSE(options.increasing);
  EXPECT_EQ(options.probability, 0.8);
}

// "rand" alone is timm's rand_augment_transform defaults, not RandAugmentOptions' recipe.
TEST(RandAugmentParse, BareRandIsTimmsDefaults) {
  const auto options = parse_rand_augment("rand", "x");
  EXPECT_EQ(options.num_ops, 2);
  EXPECT_EQ(options.magnitude, 10);
  EXPECT_EQ(options.magnitude_std, 0);
  EXPECT_FALSE(options.increasing);
  EXPECT_EQ(options.probability, 0.5);
}

TEST(RandAugmentParse, MagnitudeStdOver100IsUniform) {
  EXPECT_TRUE(std::isinf(parse_rand_augment("rand-mstd101", "x").magnitude_std));
  EXPECT_EQ(parse_rand_augment("rand-mstd100", "x").magnitude_std, 100);
}

TEST(RandAugmentParse, BadStringsNameWhereAndTheKey) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"augmix-m3", "must start with \"rand\""},
      {"rand-x3", "unknown key \"x\""},
      {"rand-foo", "unknown key \"foo\""},
      {"rand-m9-w0", "unknown key \"w\""},
      {"rand-tweights", "key \"t\""},
      {"rand-m9.5", "key \"m\" has \"9.5\", not an integer"},
      {"rand-n2x", "key \"n\" has \"2x\""},
      {"rand-mstd0.5.1", "key \"mstd\" has \"0.5.1\", not a number"},
      {"rand-m", "key \"m\" has no number"},
      {"rand-m9-m8", "key \"m\" given twice"},
      {"rand-p1.5", "key \"p\" is 1.5"},
      {"rand--m9", "an empty section"},
      {"rand-m9-", "an empty section"},
  };
  for (const auto& [spec, expected] : cases) {
    const auto what = parse_error(spec);
    EXPECT_NE(what.find("data.rand_augment: "), std::string::npos) << spec << ": " << what;
    EXPECT_NE(what.find(expected), std::string::npos) << spec << ": " << what;
  }
}

TEST(RandAugmentOps, UnknownNameAndChannelCountsAreInputErrors) {
  const auto image = noisy_gradient(5, 6, 3);
  try {
    op("Cutout", image, 1);
    ADD_FAILURE() << "ran an unknown op";
  } catch (const InputError& error) {
    const std::string what = error.what();
    EXPECT_NE(what.find("\"Cutout\""), std::string::npos) << what;
    EXPECT_NE(what.find("SolarizeIncreasing"), std::string::npos) << what;
  }
  EXPECT_THROW(op("Invert", noisy_gradient(5, 6, 4), 0), InputError);
  SampleRandom random(1);
  EXPECT_THROW(rand_augment(noisy_gradient(5, 6, 2), RandAugmentOptions{}, random, kFill),
               InputError);
}

TEST(RandAugmentOps, EveryOpKeepsTheShape) {
  const std::vector<std::pair<std::string, double>> ops = {
      {"AutoContrast", 0},
      {"Equalize", 0},
      {"Invert", 0},
      {"Rotate", 17},
      {"Posterize", 3},
      {"SolarizeIncreasing", 100},
      {"SolarizeAdd", 50},
      {"ColorIncreasing", 1.6},
      {"ContrastIncreasing", 0.4},
      {"Brightness", 1.3},
      {"SharpnessIncreasing", 1.9},
      {"ShearX", 0.2},
      {"ShearY", -0.2},
      {"TranslateXRel", 0.3},
      {"TranslateYRel", -0.3},
  };
  for (const int64_t channels : {1, 3}) {
    const auto image = noisy_gradient(9, 14, channels);
    for (const auto& [name, level] : ops) {
      for (const auto interpolation : {Interpolation::Bilinear, Interpolation::Bicubic}) {
        const auto out = op(name, image, level, interpolation);
        EXPECT_EQ(out.height, 9) << name;
        EXPECT_EQ(out.width, 14) << name;
        EXPECT_EQ(out.channels, channels) << name;
        EXPECT_EQ(out.pixels.size(), image.pixels.size()) << name;
      }
    }
  }
}

TEST(RandAugmentOps, IdentityLevels) {
  for (const int64_t channels : {1, 3}) {
    const auto image = noisy_gradient(11, 16, channels);
    const auto same = [&](const Image& out) { return out.pixels == image.pixels; };
    EXPECT_TRUE(same(op("Invert", op("Invert", image, 0), 0)));
    EXPECT_TRUE(same(op("PosterizeIncreasing", image, 8)));
    EXPECT_TRUE(same(op("Posterize", image, 9)));
    EXPECT_TRUE(same(op("SolarizeIncreasing", image, 256)));
    EXPECT_TRUE(same(op("SolarizeAdd", image, 0)));
    for (const double degrees : {0.0, 360.0, -360.0})
      EXPECT_TRUE(same(op("Rotate", image, degrees)));
    for (const auto* name :
         {"Color", "ColorIncreasing", "Contrast", "ContrastIncreasing", "Brightness",
          "BrightnessIncreasing", "Sharpness", "SharpnessIncreasing"}) {
      EXPECT_TRUE(same(op(name, image, 1.0))) << name;
    }
    // Pixel centres map onto pixel centres, where both filters return the sample itself.
    for (const auto interpolation : {Interpolation::Bilinear, Interpolation::Bicubic}) {
      for (const auto* name : {"ShearX", "ShearY", "TranslateXRel", "TranslateYRel"}) {
        EXPECT_TRUE(same(op(name, image, 0.0, interpolation))) << name;
      }
    }
  }
}

TEST(RandAugmentOps, ExactTurnsAndLimits) {
  const auto square = noisy_gradient(12, 12, 3);
  const auto oblong = noisy_gradient(9, 14, 3);
  EXPECT_EQ(op("Rotate", op("Rotate", oblong, 180), -180).pixels, oblong.pixels);
  auto turned = square;
  for (int i = 0; i < 4; ++i) turned = op("Rotate", turned, 90);
  EXPECT_EQ(turned.pixels, square.pixels);
  EXPECT_EQ(op("Rotate", square, 270).pixels, op("Rotate", square, -90).pixels);
  // Solarize at threshold 0 inverts everything; Brightness 0 and Posterize 0 are black.
  EXPECT_EQ(op("Solarize", oblong, 0).pixels, op("Invert", oblong, 0).pixels);
  const std::vector<uint8_t> black(oblong.pixels.size(), 0);
  EXPECT_EQ(op("Brightness", oblong, 0).pixels, black);
  EXPECT_EQ(op("PosterizeIncreasing", oblong, 0).pixels, black);
  // Pillow's ImageEnhance.Color on an L image blends the image with itself.
  const auto greyscale = noisy_gradient(9, 14, 1);
  EXPECT_EQ(op("ColorIncreasing", greyscale, 0.1).pixels, greyscale.pixels);
}

// A 4×4 grey gradient, v = 16 i for pixel i in row-major order:
//     0  16  32  48
//    64  80  96 112
//   128 144 160 176
//   192 208 224 240
TEST(RandAugmentOps, HandWorkedGreyGradient) {
  std::vector<int> gradient(16);
  for (int i = 0; i < 16; ++i) gradient[i] = 16 * i;
  const auto image = grey(4, 4, gradient);

  // AutoContrast: low 0, high 240, scale 255 / 240 = 1.0625, so int(16 i * 1.0625) = 17 i.
  std::vector<int> stretched(16);
  for (int i = 0; i < 16; ++i) stretched[i] = 17 * i;
  EXPECT_EQ(values_of(op("AutoContrast", image, 0)), stretched);

  // Equalize: 16 pixels, step = (16 - 1) // 255 = 0, so Pillow leaves the image as it is.
  EXPECT_EQ(values_of(op("Equalize", image, 0)), gradient);

  // Solarize at 128: values from 128 up become 255 - v.
  EXPECT_EQ(values_of(op("Solarize", image, 128)),
            (std::vector<int>{0, 16, 32, 48, 64, 80, 96, 112, 127, 111, 95, 79, 63, 47, 31, 15}));

  // Posterize to 2 bits: v & 0b11000000.
  EXPECT_EQ(values_of(op("Posterize", image, 2)),
            (std::vector<int>{0, 0, 0, 0, 64, 64, 64, 64, 128, 128, 128, 128, 192, 192, 192, 192}));

  // SolarizeAdd 100: v + 100 below 128 (capped at 255), the rest unchanged.
  EXPECT_EQ(values_of(op("SolarizeAdd", image, 100)),
            (std::vector<int>{100, 116, 132, 148, 164, 180, 196, 212, 128, 144, 160, 176, 192, 208,
                              224, 240}));

  // Brightness 1.5: 0 + 1.5 (v - 0) = 24 i, clipped at 255 from i = 11 (264).
  EXPECT_EQ(
      values_of(op("Brightness", image, 1.5)),
      (std::vector<int>{0, 24, 48, 72, 96, 120, 144, 168, 192, 216, 240, 255, 255, 255, 255, 255}));

  // Contrast 0.5: the mean is 16 * 7.5 = 120, so 120 + 0.5 (16 i - 120) = 60 + 8 i.
  std::vector<int> flattened(16);
  for (int i = 0; i < 16; ++i) flattened[i] = 60 + 8 * i;
  EXPECT_EQ(values_of(op("Contrast", image, 0.5)), flattened);

  // TranslateXRel 0.25 of width 4 = 1 pixel: out(x) = in(x + 1); the last column maps to
  // x + 0.5 + 1 = 4.5, outside, so it is the fill (fill[0] = 124 for a grey image).
  EXPECT_EQ(values_of(op("TranslateXRel", image, 0.25)),
            (std::vector<int>{16, 32, 48, 124, 80, 96, 112, 124, 144, 160, 176, 124, 208, 224, 240,
                              124}));

  // Rotate 90 (counter-clockwise, square: Pillow's exact transpose): out(x, y) = in(3 - y, x).
  EXPECT_EQ(
      values_of(op("Rotate", image, 90)),
      (std::vector<int>{48, 112, 176, 240, 32, 96, 160, 224, 16, 80, 144, 208, 0, 64, 128, 192}));

  // ShearX 0.5, bilinear: pixel (x, y) samples x_in = x + 0.5 + 0.5 (y + 0.5), y_in = y + 0.5,
  // so rows are exact (dy = 0) and row y reads between columns at offset 0.25 + 0.5 y:
  //   y = 0: x + 0.25 -> 4, 20, 36, and 48 at x = 3 (x + 1 clamps to the last column)
  //   y = 1: x + 0.75 -> 64 + 12 = 76, 92, 108; x = 3 maps to 4.25, outside: 124
  //   y = 2: x + 1.25 -> 144 + 4 = 148, 164, 176 (clamped); x = 3 outside
  //   y = 3: x + 1.75 -> 208 + 12 = 220, 236; x = 2, 3 outside
  EXPECT_EQ(
      values_of(op("ShearX", image, 0.5)),
      (std::vector<int>{4, 20, 36, 48, 76, 92, 108, 124, 148, 164, 176, 124, 220, 236, 124, 124}));
}

// Sharpness on a 4×4 image of 100 with one 230 at (1, 1). SMOOTH at (1, 1) is
// (8 * 100 + 5 * 230) / 13 = 150, so 150 + 2 (230 - 150) = 310 -> 255; beside it the sum is
// 7 * 100 + 230 + 5 * 100 = 1430, 1430 / 13 = 110, so 110 + 2 (100 - 110) = 90; the border
// pixels are SMOOTH's own copies, so they blend to themselves.
TEST(RandAugmentOps, HandWorkedSharpness) {
  std::vector<int> spike(16, 100);
  spike[5] = 230;
  EXPECT_EQ(values_of(op("Sharpness", grey(4, 4, spike), 2.0)),
            (std::vector<int>{100, 100, 100, 100, 100, 255, 90, 100, 100, 90, 90, 100, 100, 100,
                              100, 100}));
}

TEST(RandAugment, SeededRunsRepeatAndSeedsDiffer) {
  const auto image = noisy_gradient(24, 32, 3);
  RandAugmentOptions options;
  options.probability = 1.0;
  SampleRandom first(7), again(7), other(8);
  const auto a = rand_augment(image, options, first, kFill);
  const auto b = rand_augment(image, options, again, kFill);
  const auto c = rand_augment(image, options, other, kFill);
  EXPECT_EQ(a.pixels, b.pixels);
  EXPECT_NE(a.pixels, c.pixels);
  EXPECT_NE(a.pixels, image.pixels);
  EXPECT_EQ(a.height, 24);
  EXPECT_EQ(a.width, 32);
}

TEST(RandAugment, ProbabilityZeroOrNoOpsIsTheImage) {
  const auto image = noisy_gradient(8, 10, 3);
  RandAugmentOptions options;
  options.probability = 0.0;
  SampleRandom random(3);
  EXPECT_EQ(rand_augment(image, options, random, kFill).pixels, image.pixels);
  options.probability = 1.0;
  options.num_ops = 0;
  EXPECT_EQ(rand_augment(image, options, random, kFill).pixels, image.pixels);
}

// At magnitude 0 (no noise) timm's increasing levels are all "no change" except the level-free
// ops and PosterizeIncreasing (4 - 0 = 4 bits): one op's output is one of five images, and over
// many seeds each of them appears.
TEST(RandAugment, MagnitudeZeroLeavesOnlyTheLevelFreeOps) {
  const auto image = noisy_gradient(24, 32, 3);  // >= 256 pixels, or Equalize changes nothing
  const std::vector<Image> candidates = {image, op("AutoContrast", image, 0),
                                         op("Equalize", image, 0), op("Invert", image, 0),
                                         op("PosterizeIncreasing", image, 4)};
  RandAugmentOptions options;
  options.num_ops = 1;
  options.magnitude = 0;
  options.magnitude_std = 0;
  options.probability = 1.0;
  std::vector<int> seen(candidates.size(), 0);
  for (uint64_t seed = 0; seed < 300; ++seed) {
    SampleRandom random(seed);
    const auto out = rand_augment(image, options, random, kFill);
    size_t match = 0;
    while (match < candidates.size() && candidates[match].pixels != out.pixels) ++match;
    ASSERT_LT(match, candidates.size()) << "seed " << seed << " gave another image";
    ++seen[match];
  }
  for (size_t i = 0; i < seen.size(); ++i) EXPECT_GT(seen[i], 0) << "candidate " << i;
  // 10 of the 15 ops leave the image as it is.
  EXPECT_GT(seen[0], 150);
}

// The reference cases: each op at levels timm reaches (rand-m9-mstd0.5: magnitudes around 9,
// both signs) and at the ends of its range, with both of timm's interpolations for the
// geometric ones.
struct ReferenceCase {
  std::string name;
  double level;
  Interpolation interpolation;
};

std::vector<ReferenceCase> reference_cases() {
  std::vector<ReferenceCase> cases;
  const auto add = [&](const std::string& name, std::initializer_list<double> levels) {
    for (const double level : levels) cases.push_back({name, level, Interpolation::Bilinear});
  };
  const auto add_geometric = [&](const std::string& name, std::initializer_list<double> levels) {
    for (const double level : levels) {
      for (const auto interpolation : {Interpolation::Bilinear, Interpolation::Bicubic}) {
        cases.push_back({name, level, interpolation});
      }
    }
  };
  add("AutoContrast", {0});
  add("Equalize", {0});
  add("Invert", {0});
  add("PosterizeIncreasing", {0, 1, 2, 4, 8});
  add("SolarizeIncreasing", {0, 26, 128, 200, 256});
  add("SolarizeAdd", {0, 40, 99, 110});
  for (const auto* name :
       {"ColorIncreasing", "ContrastIncreasing", "BrightnessIncreasing", "SharpnessIncreasing"}) {
    add(name, {0.1, 0.19, 0.55, 1.0, 1.37, 1.81, 1.9});
  }
  add_geometric("Rotate", {27.0, -27.0, 13.7, -30.0, 90.0, 180.0, 45.0});
  add_geometric("ShearX", {0.27, -0.27, 0.1});
  add_geometric("ShearY", {0.3, -0.19});
  add_geometric("TranslateXRel", {0.405, -0.405, 0.123});
  add_geometric("TranslateYRel", {0.45, -0.31});
  return cases;
}

std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// With EXFUSION_RAND_AUGMENT_OUT=<dir> (test_rand_augment_reference.py): reads <dir>/input.txt
// ("height width channels fill_r fill_g fill_b") and <dir>/input.raw (HWC bytes), writes
// output_<i>.raw for each case and cases.txt ("i name level interpolation" per line) for the
// comparison with Pillow. Without it, the same cases run on a generated image and only the
// shapes and the determinism are checked.
TEST(RandAugmentOps, WriteReferenceOutputs) {
  const char* out_dir = std::getenv("EXFUSION_RAND_AUGMENT_OUT");
  Image image = noisy_gradient(40, 56, 3);
  uint8_t fill[3] = {kFill[0], kFill[1], kFill[2]};
  if (out_dir) {
    std::ifstream header(std::string(out_dir) + "/input.txt");
    int fill_values[3] = {0, 0, 0};
    ASSERT_TRUE(header >> image.height >> image.width >> image.channels >> fill_values[0] >>
                fill_values[1] >> fill_values[2])
        << out_dir << "/input.txt";
    for (int c = 0; c < 3; ++c) fill[c] = static_cast<uint8_t>(fill_values[c]);
    image.pixels = read_bytes(std::string(out_dir) + "/input.raw");
    ASSERT_EQ(image.pixels.size(),
              static_cast<size_t>(image.height * image.width * image.channels));
  }
  const auto cases = reference_cases();
  std::ostringstream listing;
  for (size_t i = 0; i < cases.size(); ++i) {
    const auto& c = cases[i];
    const auto out = apply_rand_augment_op(c.name, image, c.level, fill, c.interpolation);
    ASSERT_EQ(out.height, image.height) << c.name;
    ASSERT_EQ(out.width, image.width) << c.name;
    ASSERT_EQ(out.channels, image.channels) << c.name;
    EXPECT_EQ(apply_rand_augment_op(c.name, image, c.level, fill, c.interpolation).pixels,
              out.pixels)
        << c.name << " is not deterministic";
    if (!out_dir) continue;
    const std::string path = std::string(out_dir) + "/output_" + std::to_string(i) + ".raw";
    std::ofstream(path, std::ios::binary)
        .write(reinterpret_cast<const char*>(out.pixels.data()),
               static_cast<std::streamsize>(out.pixels.size()));
    char level[32];
    std::snprintf(level, sizeof(level), "%.17g", c.level);
    listing << i << " " << c.name << " " << level << " "
            << (c.interpolation == Interpolation::Bicubic ? "bicubic" : "bilinear") << "\n";
  }
  if (out_dir) {
    std::ofstream(std::string(out_dir) + "/cases.txt") << listing.str();
  }
}

}  // namespace
}  // namespace exfusion
