// RandAugment (see rand_augment.h). Point ops are 256-entry tables per channel; the enhance ops
// repeat Pillow's float32 ImagingBlend through a table of factor × difference; the affine ops
// repeat Image.transform's double-precision inverse mapping and its bilinear and cubic filters.
#include "exfusion/data/rand_augment.h"

#include <algorithm>
#include <array>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <stdexcept>
#include <utility>
#include <vector>

#include "exfusion/util/error.h"

namespace exfusion {
namespace {

// timm's _LEVEL_DENOM: magnitudes are on a 0..10 scale.
constexpr double kLevelDenominator = 10.0;

using Lut = std::array<uint8_t, 256>;
using Histogram = std::array<int64_t, 256>;

enum class Op {
  AutoContrast,
  Equalize,
  Invert,
  Rotate,
  Posterize,
  Solarize,
  SolarizeAdd,
  Color,
  Contrast,
  Brightness,
  Sharpness,
  ShearX,
  ShearY,
  TranslateXRel,
  TranslateYRel,
};

// timm's level functions (LEVEL_TO_ARG): the magnitude on the 0..10 scale into the op's argument.
enum class Level {
  None,
  Rotate,
  Posterize,
  PosterizeIncreasing,
  Solarize,
  SolarizeIncreasing,
  SolarizeAdd,
  Enhance,
  EnhanceIncreasing,
  Shear,
  TranslateRel,
};

struct OpEntry {
  const char* name;
  Op op;
  Level level;
};

// timm's _RAND_TRANSFORMS and _RAND_INCREASING_TRANSFORMS, in timm's order.
constexpr std::array<OpEntry, 15> kRandTransforms = {{
    {"AutoContrast", Op::AutoContrast, Level::None},
    {"Equalize", Op::Equalize, Level::None},
    {"Invert", Op::Invert, Level::None},
    {"Rotate", Op::Rotate, Level::Rotate},
    {"Posterize", Op::Posterize, Level::Posterize},
    {"Solarize", Op::Solarize, Level::Solarize},
    {"SolarizeAdd", Op::SolarizeAdd, Level::SolarizeAdd},
    {"Color", Op::Color, Level::Enhance},
    {"Contrast", Op::Contrast, Level::Enhance},
    {"Brightness", Op::Brightness, Level::Enhance},
    {"Sharpness", Op::Sharpness, Level::Enhance},
    {"ShearX", Op::ShearX, Level::Shear},
    {"ShearY", Op::ShearY, Level::Shear},
    {"TranslateXRel", Op::TranslateXRel, Level::TranslateRel},
    {"TranslateYRel", Op::TranslateYRel, Level::TranslateRel},
}};
constexpr std::array<OpEntry, 15> kRandIncreasingTransforms = {{
    {"AutoContrast", Op::AutoContrast, Level::None},
    {"Equalize", Op::Equalize, Level::None},
    {"Invert", Op::Invert, Level::None},
    {"Rotate", Op::Rotate, Level::Rotate},
    {"PosterizeIncreasing", Op::Posterize, Level::PosterizeIncreasing},
    {"SolarizeIncreasing", Op::Solarize, Level::SolarizeIncreasing},
    {"SolarizeAdd", Op::SolarizeAdd, Level::SolarizeAdd},
    {"ColorIncreasing", Op::Color, Level::EnhanceIncreasing},
    {"ContrastIncreasing", Op::Contrast, Level::EnhanceIncreasing},
    {"BrightnessIncreasing", Op::Brightness, Level::EnhanceIncreasing},
    {"SharpnessIncreasing", Op::Sharpness, Level::EnhanceIncreasing},
    {"ShearX", Op::ShearX, Level::Shear},
    {"ShearY", Op::ShearY, Level::Shear},
    {"TranslateXRel", Op::TranslateXRel, Level::TranslateRel},
    {"TranslateYRel", Op::TranslateYRel, Level::TranslateRel},
}};

// Both lists' names: the increasing variants and the plain ones (the same op at another level).
Op op_named(const std::string& name) {
  std::string known;
  for (size_t i = 0; i < kRandTransforms.size(); ++i) {
    const OpEntry& increasing = kRandIncreasingTransforms[i];
    const OpEntry& plain = kRandTransforms[i];
    if (name == increasing.name) return increasing.op;
    if (name == plain.name) return plain.op;
    known += std::string(known.empty() ? "" : ", ") + increasing.name;
    if (std::string(plain.name) != increasing.name) known += std::string(", ") + plain.name;
  }
  throw InputError("unknown RandAugment op \"" + name + "\" (known: " + known + ")");
}

void check_image(const Image& image) {
  if (image.channels != 1 && image.channels != 3) {
    throw InputError("RandAugment: an image with " + std::to_string(image.channels) +
                     " channels (expected 1, greyscale, or 3, RGB)");
  }
  if (image.height < 0 || image.width < 0 ||
      image.pixels.size() != static_cast<size_t>(image.height * image.width * image.channels)) {
    throw std::invalid_argument("RandAugment: the pixel buffer does not match the image shape");
  }
}

// `out` takes `in`'s shape; its buffer is reused when large enough (rand_augment's ping-pong).
void reshape_like(const Image& in, Image& out) {
  out.height = in.height;
  out.width = in.width;
  out.channels = in.channels;
  out.pixels.resize(in.pixels.size());
}

// ---- Point ops: Pillow's Image.point with one table per band ----

void map_channels(const Image& in, const std::array<Lut, 3>& luts, Image& out) {
  reshape_like(in, out);
  const size_t size = in.pixels.size();
  const uint8_t* src = in.pixels.data();
  uint8_t* dst = out.pixels.data();
  if (in.channels == 1) {
    for (size_t i = 0; i < size; ++i) dst[i] = luts[0][src[i]];
    return;
  }
  for (size_t i = 0; i < size; i += 3) {
    dst[i] = luts[0][src[i]];
    dst[i + 1] = luts[1][src[i + 1]];
    dst[i + 2] = luts[2][src[i + 2]];
  }
}

void map_pixels(const Image& in, const Lut& lut, Image& out) {
  map_channels(in, {lut, lut, lut}, out);
}

std::array<Histogram, 3> channel_histograms(const Image& image) {
  std::array<Histogram, 3> histograms{};
  const size_t size = image.pixels.size();
  const auto channels = static_cast<size_t>(image.channels);
  for (size_t i = 0; i < size; i += channels) {
    for (size_t c = 0; c < channels; ++c) ++histograms[c][image.pixels[i + c]];
  }
  return histograms;
}

Lut identity_lut() {
  Lut lut;
  for (int i = 0; i < 256; ++i) lut[i] = static_cast<uint8_t>(i);
  return lut;
}

// ImageOps.autocontrast with no cutoff: the band's [lowest, highest] value stretched to
// [0, 255], each entry int(i * scale + offset) as Python truncates it.
Lut autocontrast_lut(const Histogram& histogram) {
  int low = 0;
  while (low < 256 && histogram[low] == 0) ++low;
  int high = 255;
  while (high >= 0 && histogram[high] == 0) --high;
  if (high <= low) return identity_lut();
  const double scale = 255.0 / (high - low);
  const double offset = -low * scale;
  Lut lut;
  for (int i = 0; i < 256; ++i) {
    const volatile double scaled = i * scale;  // rounded alone, as Python does (no fused FMA)
    const auto value = static_cast<int64_t>(scaled + offset);
    lut[i] = static_cast<uint8_t>(std::clamp<int64_t>(value, 0, 255));
  }
  return lut;
}

// ImageOps.equalize: the step is the pixel count without the last occupied bin, over 255;
// entry i is (step / 2 + pixels below i) / step, clipped to a byte as Image.point does.
Lut equalize_lut(const Histogram& histogram) {
  int64_t occupied = 0, total = 0, last_count = 0;
  for (const int64_t count : histogram) {
    if (count == 0) continue;
    ++occupied;
    total += count;
    last_count = count;
  }
  if (occupied <= 1) return identity_lut();
  const int64_t step = (total - last_count) / 255;
  if (step == 0) return identity_lut();
  Lut lut;
  int64_t running = step / 2;
  for (int i = 0; i < 256; ++i) {
    lut[i] = static_cast<uint8_t>(std::min<int64_t>(running / step, 255));
    running += histogram[i];
  }
  return lut;
}

void autocontrast(const Image& in, Image& out) {
  const auto histograms = channel_histograms(in);
  map_channels(in,
               {autocontrast_lut(histograms[0]), autocontrast_lut(histograms[1]),
                autocontrast_lut(histograms[2])},
               out);
}

void equalize(const Image& in, Image& out) {
  const auto histograms = channel_histograms(in);
  map_channels(
      in, {equalize_lut(histograms[0]), equalize_lut(histograms[1]), equalize_lut(histograms[2])},
      out);
}

Lut invert_lut() {
  Lut lut;
  for (int i = 0; i < 256; ++i) lut[i] = static_cast<uint8_t>(255 - i);
  return lut;
}

// timm's posterize: 8 bits or more is the image itself; ImageOps.posterize keeps the top
// `bits`. Fewer than 1 bit clears every pixel, as Pillow did before 11 and TensorFlow does
// (Pillow 13 raises ValueError, which timm's PosterizeIncreasing reaches at magnitude 10).
Lut posterize_lut(int64_t bits) {
  if (bits >= 8) return identity_lut();
  const int mask = bits <= 0 ? 0 : (~((1 << (8 - bits)) - 1)) & 0xff;
  Lut lut;
  for (int i = 0; i < 256; ++i) lut[i] = static_cast<uint8_t>(i & mask);
  return lut;
}

// ImageOps.solarize: values at or above the threshold are inverted.
Lut solarize_lut(int64_t threshold) {
  Lut lut;
  for (int i = 0; i < 256; ++i) lut[i] = static_cast<uint8_t>(i < threshold ? i : 255 - i);
  return lut;
}

// timm's solarize_add: `add` on values below 128, capped at 255.
Lut solarize_add_lut(int64_t add) {
  Lut lut;
  for (int i = 0; i < 256; ++i) {
    lut[i] = static_cast<uint8_t>(i < 128 ? std::clamp<int64_t>(i + add, 0, 255) : i);
  }
  return lut;
}

// ---- Enhance ops: ImageEnhance's Image.blend(degenerate, image, factor) ----

// Pillow's "<= 0: 0, >= 255: 255, else truncate" of a float, from the value already truncated
// toward zero (which maps (-1, 0] to 0 as well): integer selects instead of float branches,
// which mispredict on photos (five times slower).
inline uint8_t clip_truncated(int64_t truncated) {
  return static_cast<uint8_t>(truncated < 0 ? 0 : truncated > 255 ? 255 : truncated);
}

// Pillow's ImagingBlend: degenerate + factor * (image - degenerate) in float32, clipped to
// [0, 255] and truncated. The products come from a table, so what remains per pixel is the one
// float addition Pillow makes, rounded the same way.
class EnhanceBlend {
 public:
  explicit EnhanceBlend(double factor) {
    const auto alpha = static_cast<float>(factor);  // Pillow's blend takes a C float
    for (int difference = -255; difference <= 255; ++difference) {
      float scaled = alpha * static_cast<float>(difference);
      // Beyond ±512 every sum clips the same way; the bound keeps the int conversion defined.
      if (!(scaled > -512.0f)) scaled = -512.0f;
      if (!(scaled < 512.0f)) scaled = 512.0f;
      scaled_[difference + 255] = scaled;
    }
  }
  uint8_t operator()(int degenerate, int value) const {
    const float blended = static_cast<float>(degenerate) + scaled_[value - degenerate + 255];
    return clip_truncated(static_cast<int>(blended));
  }

 private:
  std::array<float, 511> scaled_;
};

// Pillow's RGB → L: ITU-R 601-2 luma in 16-bit fixed point, rounded.
inline int luminance(const uint8_t* rgb) {
  return (rgb[0] * 19595 + rgb[1] * 38470 + rgb[2] * 7471 + 0x8000) >> 16;
}

// Brightness and Contrast blend with a constant degenerate, so they are tables.
Lut constant_blend_lut(int degenerate, double factor) {
  const EnhanceBlend blend(factor);
  Lut lut;
  for (int i = 0; i < 256; ++i) lut[i] = blend(degenerate, i);
  return lut;
}

// ImageEnhance.Color: the degenerate is the L conversion back to RGB. On an L image Pillow
// blends the image with itself, which is the image.
void color(const Image& in, double factor, Image& out) {
  if (in.channels == 1) {
    out = in;
    return;
  }
  reshape_like(in, out);
  const EnhanceBlend blend(factor);
  const size_t size = in.pixels.size();
  const uint8_t* src = in.pixels.data();
  uint8_t* dst = out.pixels.data();
  for (size_t i = 0; i < size; i += 3) {
    const int grey = luminance(src + i);
    dst[i] = blend(grey, src[i]);
    dst[i + 1] = blend(grey, src[i + 1]);
    dst[i + 2] = blend(grey, src[i + 2]);
  }
}

// ImageEnhance.Contrast: the degenerate is the mean of the L image, int(mean + 0.5).
void contrast(const Image& in, double factor, Image& out) {
  int64_t sum = 0;
  const size_t size = in.pixels.size();
  if (in.channels == 1) {
    for (size_t i = 0; i < size; ++i) sum += in.pixels[i];
  } else {
    for (size_t i = 0; i < size; i += 3) sum += luminance(in.pixels.data() + i);
  }
  const int64_t count = in.height * in.width;
  const double mean = count ? static_cast<double>(sum) / static_cast<double>(count) : 0.0;
  // NOLINTNEXTLINE(bugprone-incorrect-roundings): Pillow's int(mean + 0.5), rounding included
  map_pixels(in, constant_blend_lut(static_cast<int>(mean + 0.5), factor), out);
}

// ImageEnhance.Sharpness: the degenerate is ImageFilter.SMOOTH, the 3×3 kernel
// [[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13 with Pillow's +0.5 rounding, border pixels kept (so
// they blend to themselves) and images under 3×3 copied whole. Pillow sums in float32, but the
// exact sum s / 13 + 0.5 is never within 0.5 / 13 of an integer, far beyond float32's error, so
// the integer floor((2 s + 13) / 26) gives the same bytes.
void sharpness(const Image& in, double factor, Image& out) {
  out = in;
  const int64_t height = in.height, width = in.width, channels = in.channels;
  if (height < 3 || width < 3) return;
  const EnhanceBlend blend(factor);
  const int64_t stride = width * channels;
  for (int64_t y = 1; y < height - 1; ++y) {
    const uint8_t* above = in.pixels.data() + (y - 1) * stride;
    const uint8_t* row = above + stride;
    const uint8_t* below = row + stride;
    uint8_t* dst = out.pixels.data() + y * stride;
    for (int64_t i = channels; i < stride - channels; ++i) {
      const int sum = above[i - channels] + above[i] + above[i + channels] + row[i - channels] +
                      5 * row[i] + row[i + channels] + below[i - channels] + below[i] +
                      below[i + channels];
      dst[i] = blend((2 * sum + 13) / 26, row[i]);
    }
  }
}

// ---- Affine ops: Pillow's Image.transform(AFFINE) with bilinear or bicubic resampling ----

// Output pixel centre (x + 0.5, y + 0.5) samples the input at (a x + b y + c, d x + e y + f).
struct AffineMatrix {
  double a, b, c, d, e, f;
};

inline int64_t pillow_floor(double v) {
  return v < 0.0 ? static_cast<int64_t>(std::floor(v)) : static_cast<int64_t>(v);
}

inline int64_t clip_index(int64_t i, int64_t size) { return i < 0 ? 0 : (i < size ? i : size - 1); }

// Geometry.c's bilinear_filter: edge-clamped columns; a missing lower row repeats the upper.
template <int64_t channels>
void sample_bilinear(const Image& in, double x_in, double y_in, uint8_t* dst) {
  const int64_t stride = in.width * channels;
  x_in -= 0.5;
  y_in -= 0.5;
  const int64_t x = pillow_floor(x_in), y = pillow_floor(y_in);
  const double dx = x_in - static_cast<double>(x), dy = y_in - static_cast<double>(y);
  const int64_t x0 = clip_index(x, in.width) * channels;
  const int64_t x1 = clip_index(x + 1, in.width) * channels;
  const uint8_t* upper = in.pixels.data() + clip_index(y, in.height) * stride;
  const bool has_lower = y + 1 >= 0 && y + 1 < in.height;
  const uint8_t* lower = has_lower ? in.pixels.data() + (y + 1) * stride : upper;
  for (int64_t c = 0; c < channels; ++c) {
    const double top = upper[x0 + c] + (upper[x1 + c] - upper[x0 + c]) * dx;
    const double bottom = has_lower ? lower[x0 + c] + (lower[x1 + c] - lower[x0 + c]) * dx : top;
    dst[c] = static_cast<uint8_t>(top + (bottom - top) * dy);
  }
}

// Geometry.c's BICUBIC macro: the cubic through four samples (Pillow's a = -1 form).
inline double cubic(double v1, double v2, double v3, double v4, double d) {
  const double p1 = v2;
  const double p2 = -v1 + v3;
  const double p3 = 2 * (v1 - v2) + v3 - v4;
  const double p4 = -v1 + v2 - v3 + v4;
  return p1 + d * (p2 + d * (p3 + d * p4));
}

// Geometry.c's bicubic_filter: a 4×4 window from one pixel up-left; the first row is
// edge-clamped, each later row outside the image repeats the row before it.
template <int64_t channels>
void sample_bicubic(const Image& in, double x_in, double y_in, uint8_t* dst) {
  const int64_t stride = in.width * channels;
  x_in -= 0.5;
  y_in -= 0.5;
  int64_t x = pillow_floor(x_in), y = pillow_floor(y_in);
  const double dx = x_in - static_cast<double>(x), dy = y_in - static_cast<double>(y);
  --x;
  --y;
  int64_t columns[4];
  for (int64_t i = 0; i < 4; ++i) columns[i] = clip_index(x + i, in.width) * channels;
  const uint8_t* rows[4];
  rows[0] = in.pixels.data() + clip_index(y, in.height) * stride;
  for (int64_t i = 1; i < 4; ++i) {
    rows[i] = y + i >= 0 && y + i < in.height ? in.pixels.data() + (y + i) * stride : rows[i - 1];
  }
  // The 4 rows × channels horizontal cubics side by side, so that the compiler vectorises them.
  constexpr int64_t lanes = 4 * channels;
  double p1[lanes], p2[lanes], p3[lanes], p4[lanes], across[lanes];
  for (int64_t i = 0; i < 4; ++i) {
    for (int64_t c = 0; c < channels; ++c) {
      const uint8_t* row = rows[i] + c;
      const int v1 = row[columns[0]], v2 = row[columns[1]], v3 = row[columns[2]],
                v4 = row[columns[3]];
      const int64_t lane = i * channels + c;
      p1[lane] = v2;
      p2[lane] = -v1 + v3;
      p3[lane] = 2 * (v1 - v2) + v3 - v4;
      p4[lane] = -v1 + v2 - v3 + v4;
    }
  }
  for (int64_t lane = 0; lane < lanes; ++lane) {
    across[lane] = p1[lane] + dx * (p2[lane] + dx * (p3[lane] + dx * p4[lane]));
  }
  for (int64_t c = 0; c < channels; ++c) {
    const double v = cubic(across[c], across[channels + c], across[2 * channels + c],
                           across[3 * channels + c], dy);
    dst[c] = clip_truncated(static_cast<int64_t>(v));  // |v| < 2^11: the conversion is defined
  }
}

// ImagingGenericTransform with fill off: pixels mapped outside the input keep the fill colour
// Image.transform created the output with. Pillow computes (a x + b y) + c per pixel; the
// products come from per-column and per-row tables, which is faster and leaves only additions
// per pixel, so no compiler can fuse them into multiply-adds that round unlike Pillow's.
template <int64_t channels, void (*sample)(const Image&, double, double, uint8_t*)>
void transform_pixels(const Image& in, const AffineMatrix& m, const uint8_t fill[3], Image& out) {
  const int64_t height = in.height, width = in.width;
  std::vector<double> column_terms(static_cast<size_t>(2 * width));  // a x, d x per column
  std::vector<double> row_terms(static_cast<size_t>(2 * height));    // b y, e y per row
  for (int64_t x = 0; x < width; ++x) {
    const double centre = static_cast<double>(x) + 0.5;
    column_terms[2 * x] = m.a * centre;
    column_terms[2 * x + 1] = m.d * centre;
  }
  for (int64_t y = 0; y < height; ++y) {
    const double centre = static_cast<double>(y) + 0.5;
    row_terms[2 * y] = m.b * centre;
    row_terms[2 * y + 1] = m.e * centre;
  }
  const auto width_limit = static_cast<double>(width), height_limit = static_cast<double>(height);
  uint8_t* dst = out.pixels.data();
  for (int64_t y = 0; y < height; ++y) {
    const double row_x = row_terms[2 * y], row_y = row_terms[2 * y + 1];
    for (int64_t x = 0; x < width; ++x, dst += channels) {
      const double x_in = column_terms[2 * x] + row_x + m.c;
      const double y_in = column_terms[2 * x + 1] + row_y + m.f;
      // Pillow's "x < 0 || x >= w || ...", written so that a NaN from absurd levels fills too.
      if (!(x_in >= 0.0 && x_in < width_limit && y_in >= 0.0 && y_in < height_limit)) {
        for (int64_t c = 0; c < channels; ++c) dst[c] = fill[c];
      } else {
        sample(in, x_in, y_in, dst);
      }
    }
  }
}

// The channel count and the filter as template arguments, so the per-pixel loops unroll.
void affine_transform(const Image& in, const AffineMatrix& m, Interpolation interpolation,
                      const uint8_t fill[3], Image& out) {
  reshape_like(in, out);
  const bool bicubic = interpolation == Interpolation::Bicubic;
  if (in.channels == 1) {
    return bicubic ? transform_pixels<1, sample_bicubic<1>>(in, m, fill, out)
                   : transform_pixels<1, sample_bilinear<1>>(in, m, fill, out);
  }
  return bicubic ? transform_pixels<3, sample_bicubic<3>>(in, m, fill, out)
                 : transform_pixels<3, sample_bilinear<3>>(in, m, fill, out);
}

// Python's a * x + b * y: each product rounded alone (volatile: no fused multiply-add).
double python_products_sum(double a, double x, double b, double y) {
  const volatile double first = a * x;
  const volatile double second = b * y;
  return first + second;
}

// Python's float %: the remainder takes the divisor's sign (-30 % 360 == 330).
double python_mod(double value, double divisor) {
  double mod = std::fmod(value, divisor);
  if (mod != 0.0) {
    if ((divisor < 0) != (mod < 0)) mod += divisor;
  } else {
    mod = std::copysign(0.0, divisor);
  }
  return mod;
}

// Python's round(x, 15): correctly rounded to 15 decimals and read back, which is what glibc's
// printf and strtod do too.
double round_15_decimals(double x) {
  char text[64];
  std::snprintf(text, sizeof(text), "%.15f", x);
  return std::strtod(text, nullptr);
}

// Image.transpose's ROTATE_180, ROTATE_90 (counter-clockwise) and ROTATE_270; the quarter turns
// only reach here for square images, as Image.rotate takes them only then.
void rotate_exactly(const Image& in, int64_t quarter_turns, Image& out) {
  reshape_like(in, out);
  const int64_t height = in.height, width = in.width, channels = in.channels;
  for (int64_t y = 0; y < height; ++y) {
    for (int64_t x = 0; x < width; ++x) {
      int64_t source_x = width - 1 - x, source_y = height - 1 - y;
      if (quarter_turns == 1) {
        source_x = width - 1 - y;
        source_y = x;
      } else if (quarter_turns == 3) {
        source_x = y;
        source_y = height - 1 - x;
      }
      const uint8_t* src = in.pixels.data() + (source_y * width + source_x) * channels;
      uint8_t* dst = out.pixels.data() + (y * width + x) * channels;
      for (int64_t c = 0; c < channels; ++c) dst[c] = src[c];
    }
  }
}

// Image.rotate(degrees, resample, fillcolor=fill) without expand: its exact fast paths, else
// the inverse rotation about the centre (w / 2, h / 2) with its entries rounded to 15 decimals.
void rotate(const Image& in, double degrees, Interpolation interpolation, const uint8_t fill[3],
            Image& out) {
  const double angle = python_mod(degrees, 360.0);
  if (angle == 0.0) {
    out = in;
    return;
  }
  if (angle == 180.0) return rotate_exactly(in, 2, out);
  if ((angle == 90.0 || angle == 270.0) && in.width == in.height) {
    return rotate_exactly(in, angle == 90.0 ? 1 : 3, out);
  }
  const double radians = -(angle * (M_PI / 180.0));
  const double cosine = round_15_decimals(std::cos(radians));
  const double sine = round_15_decimals(std::sin(radians));
  const double minus_sine = round_15_decimals(-std::sin(radians));
  const double centre_x = static_cast<double>(in.width) / 2.0;
  const double centre_y = static_cast<double>(in.height) / 2.0;
  const AffineMatrix matrix{
      cosine,     sine,   python_products_sum(cosine, -centre_x, sine, -centre_y) + centre_x,
      minus_sine, cosine, python_products_sum(minus_sine, -centre_x, cosine, -centre_y) + centre_y};
  affine_transform(in, matrix, interpolation, fill, out);
}

// ---- The ops and RandAugment ----

void run_op(Op op, const Image& in, double level, const uint8_t fill[3],
            Interpolation interpolation, Image& out) {
  // The integer levels, as timm's level functions return them (Python int() truncates); past
  // ±1024 every integer op saturates, and the bound keeps the conversion defined.
  const auto whole = static_cast<int64_t>(std::clamp(level, -1024.0, 1024.0));
  const double width = static_cast<double>(in.width), height = static_cast<double>(in.height);
  switch (op) {
    case Op::AutoContrast:
      return autocontrast(in, out);
    case Op::Equalize:
      return equalize(in, out);
    case Op::Invert:
      return map_pixels(in, invert_lut(), out);
    case Op::Rotate:
      return rotate(in, level, interpolation, fill, out);
    case Op::Posterize:
      return map_pixels(in, posterize_lut(whole), out);
    case Op::Solarize:
      return map_pixels(in, solarize_lut(whole), out);
    case Op::SolarizeAdd:
      return map_pixels(in, solarize_add_lut(whole), out);
    case Op::Color:
      return color(in, level, out);
    case Op::Contrast:
      return contrast(in, level, out);
    case Op::Brightness:
      return map_pixels(in, constant_blend_lut(0, level), out);
    case Op::Sharpness:
      return sharpness(in, level, out);
    case Op::ShearX:
      return affine_transform(in, {1, level, 0, 0, 1, 0}, interpolation, fill, out);
    case Op::ShearY:
      return affine_transform(in, {1, 0, 0, level, 1, 0}, interpolation, fill, out);
    case Op::TranslateXRel:
      return affine_transform(in, {1, 0, level * width, 0, 1, 0}, interpolation, fill, out);
    case Op::TranslateYRel:
      return affine_transform(in, {1, 0, 0, 0, 1, level * height}, interpolation, fill, out);
  }
  throw std::logic_error("RandAugment: an op without an implementation");
}

bool is_geometric(Op op) {
  return op == Op::Rotate || op == Op::ShearX || op == Op::ShearY || op == Op::TranslateXRel ||
         op == Op::TranslateYRel;
}

// timm's _randomly_negate: negated when random.random() > 0.5.
double randomly_negate(double value, SampleRandom& random) {
  return random.uniform() > 0.5 ? -value : value;
}

// timm 1.0.31's level functions, in its arithmetic order so the doubles agree.
double op_argument(Level level, double magnitude, SampleRandom& random) {
  const double fraction = magnitude / kLevelDenominator;
  const auto truncate = [](double v) { return static_cast<double>(static_cast<int64_t>(v)); };
  switch (level) {
    case Level::None:
      return 0.0;
    case Level::Rotate:
      return randomly_negate(fraction * 30.0, random);
    case Level::Posterize:
      return truncate(fraction * 4);
    case Level::PosterizeIncreasing:
      return 4 - truncate(fraction * 4);
    case Level::Solarize:
      return std::min(256.0, truncate(fraction * 256));
    case Level::SolarizeIncreasing:
      return 256 - std::min(256.0, truncate(fraction * 256));
    case Level::SolarizeAdd:
      return std::min(128.0, truncate(fraction * 110));
    case Level::Enhance:
      return fraction * 1.8 + 0.1;
    case Level::EnhanceIncreasing:
      return std::max(0.1, 1.0 + randomly_negate(fraction * 0.9, random));
    case Level::Shear:
      return randomly_negate(fraction * 0.3, random);
    case Level::TranslateRel:
      return randomly_negate(fraction * 0.45, random);
  }
  throw std::logic_error("RandAugment: a level function without an implementation");
}

// Python's int() / float() of a config value: the whole text must be the number.
bool parse_integer(const std::string& text, int64_t& value) {
  errno = 0;
  char* end = nullptr;
  value = std::strtoll(text.c_str(), &end, 10);
  return errno == 0 && end == text.c_str() + text.size();
}

bool parse_real(const std::string& text, double& value) {
  char* end = nullptr;
  value = std::strtod(text.c_str(), &end);
  return end == text.c_str() + text.size();
}

}  // namespace

RandAugmentOptions parse_rand_augment(const std::string& spec, const std::string& where) {
  const std::string example = " (e.g. rand-m9-mstd0.5-inc1; keys m, n, mstd, mmax, inc, p)";
  std::vector<std::string> sections;
  for (size_t start = 0;;) {
    const size_t dash = spec.find('-', start);
    sections.push_back(spec.substr(start, dash == std::string::npos ? dash : dash - start));
    if (dash == std::string::npos) break;
    start = dash + 1;
  }
  if (sections[0] != "rand") {
    throw InputError(where + ": RandAugment \"" + spec + "\" must start with \"rand\"" + example);
  }
  // rand_augment_transform's defaults: what "rand" alone means in timm.
  RandAugmentOptions options;
  options.num_ops = 2;
  options.magnitude = kLevelDenominator;
  options.magnitude_std = 0;
  options.magnitude_max = kLevelDenominator;
  options.increasing = false;
  options.probability = 0.5;
  std::vector<std::string> seen;
  for (size_t i = 1; i < sections.size(); ++i) {
    const std::string& section = sections[i];
    // timm's re.split(r'(\d.*)'): the key is everything before the first digit.
    const size_t digit = section.find_first_of("0123456789");
    const std::string key = section.substr(0, digit);
    const std::string value = digit == std::string::npos ? "" : section.substr(digit);
    const auto fail = [&](const std::string& problem) {
      throw InputError(where + ": RandAugment \"" + spec + "\": " + problem + example);
    };
    if (section.empty()) fail("an empty section");
    if (!key.empty() && key[0] == 't') {
      fail("key \"t\" (timm's named transform sets) is not supported");
    }
    if (key != "m" && key != "n" && key != "mstd" && key != "mmax" && key != "inc" && key != "p") {
      fail("unknown key \"" + key + "\" in section \"" + section + "\"");
    }
    if (value.empty()) fail("key \"" + key + "\" has no number");
    if (std::find(seen.begin(), seen.end(), key) != seen.end()) {
      fail("key \"" + key + "\" given twice");
    }
    seen.push_back(key);
    int64_t integer = 0;
    double real = 0;
    const bool is_real = key == "mstd" || key == "p";
    if (is_real ? !parse_real(value, real) : !parse_integer(value, integer)) {
      fail("key \"" + key + "\" has \"" + value + "\", not " +
           (is_real ? "a number" : "an integer"));
    }
    if (key == "m") {
      options.magnitude = static_cast<double>(integer);
    } else if (key == "n") {
      options.num_ops = integer;
    } else if (key == "mstd") {
      options.magnitude_std = real > 100 ? std::numeric_limits<double>::infinity() : real;
    } else if (key == "mmax") {
      options.magnitude_max = static_cast<double>(integer);
    } else if (key == "inc") {
      options.increasing = integer != 0;
    } else {
      if (real > 1) fail("key \"p\" is " + value + ", a probability must be at most 1");
      options.probability = real;
    }
  }
  return options;
}

Image rand_augment(const Image& image, const RandAugmentOptions& options, SampleRandom& random,
                   const uint8_t fill[3]) {
  check_image(image);
  if (!std::isfinite(options.magnitude) || !std::isfinite(options.magnitude_max) ||
      std::isnan(options.magnitude_std) || !(options.probability >= 0)) {
    throw InputError(
        "RandAugment: magnitude and magnitude_max must be finite, magnitude_std a "
        "number, probability at least 0");
  }
  const auto& ops = options.increasing ? kRandIncreasingTransforms : kRandTransforms;
  // Each applied op writes the other buffer: no copy of the input, no allocation once warm.
  Image buffers[2];
  int latest = -1;
  for (int64_t i = 0; i < options.num_ops; ++i) {
    const OpEntry& entry =
        ops[static_cast<size_t>(random.integer(0, static_cast<int64_t>(ops.size()) - 1))];
    if (options.probability < 1.0 && random.uniform() > options.probability) continue;
    double magnitude = options.magnitude;
    if (options.magnitude_std > 100) {
      magnitude = random.uniform(0, magnitude);
    } else if (options.magnitude_std > 0) {
      magnitude = random.normal(magnitude, options.magnitude_std);
    }
    // timm's `magnitude_max or _LEVEL_DENOM`.
    const double upper = options.magnitude_max != 0 ? options.magnitude_max : kLevelDenominator;
    magnitude = std::max(0.0, std::min(magnitude, upper));
    const double argument = op_argument(entry.level, magnitude, random);
    // timm's _RANDOM_INTERPOLATION, random.choice((BILINEAR, BICUBIC)) per geometric op.
    Interpolation interpolation = Interpolation::Bilinear;
    if (is_geometric(entry.op) && random.bernoulli(0.5)) interpolation = Interpolation::Bicubic;
    const int target = latest == 0 ? 1 : 0;
    run_op(entry.op, latest < 0 ? image : buffers[latest], argument, fill, interpolation,
           buffers[target]);
    latest = target;
  }
  if (latest < 0) return image;
  return std::move(buffers[latest]);
}

Image apply_rand_augment_op(const std::string& name, const Image& image, double level,
                            const uint8_t fill[3], Interpolation interpolation) {
  const Op op = op_named(name);
  if (!std::isfinite(level)) {
    throw InputError("RandAugment op " + name + ": a level that is not finite");
  }
  check_image(image);
  Image out;
  run_op(op, image, level, fill, interpolation, out);
  return out;
}

}  // namespace exfusion
