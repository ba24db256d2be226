// Per-image transforms (see image_transforms.h). The resampler follows Pillow's
// libImaging/Resample.c: coefficients per output pixel over the filter's support (widened by
// the downscaling factor for antialiasing), normalised, rounded to 22-bit fixed point.
#include "exfusion/data/image_transforms.h"

#include <algorithm>
#include <cmath>

namespace exfusion {
namespace {

constexpr int kPrecisionBits = 32 - 8 - 2;

double bilinear_filter(double x) {
  x = std::fabs(x);
  return x < 1.0 ? 1.0 - x : 0.0;
}

double bicubic_filter(double x) {
  constexpr double a = -0.5;
  x = std::fabs(x);
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0;
  if (x < 2.0) return (((x - 5.0) * x + 8.0) * x - 4.0) * a;
  return 0.0;
}

// One output pixel's window [first, first + weights.size()) of input pixels and its weights.
struct Coefficients {
  std::vector<int64_t> first;
  std::vector<int64_t> count;
  std::vector<int32_t> weights;  // count_max per output pixel, fixed point
  int64_t count_max = 0;
};

Coefficients coefficients(int64_t in_size, int64_t out_size, Interpolation interpolation) {
  const double support_base = interpolation == Interpolation::Bicubic ? 2.0 : 1.0;
  const auto filter = interpolation == Interpolation::Bicubic ? bicubic_filter : bilinear_filter;
  const double scale = static_cast<double>(in_size) / static_cast<double>(out_size);
  const double filter_scale = std::max(scale, 1.0);
  const double support = support_base * filter_scale, inverse_scale = 1.0 / filter_scale;
  Coefficients c;
  c.count_max = static_cast<int64_t>(std::ceil(support)) * 2 + 1;
  c.first.resize(out_size);
  c.count.resize(out_size);
  c.weights.assign(static_cast<size_t>(out_size * c.count_max), 0);
  std::vector<double> k(static_cast<size_t>(c.count_max));
  for (int64_t out = 0; out < out_size; ++out) {
    const double centre = (static_cast<double>(out) + 0.5) * scale;
    // Pillow's (int)(x + 0.5): truncation toward zero, as its C code does, not rounding.
    // NOLINTNEXTLINE(bugprone-incorrect-roundings)
    const auto low = std::max<int64_t>(static_cast<int64_t>(centre - support + 0.5), 0);
    // NOLINTNEXTLINE(bugprone-incorrect-roundings)
    const auto high = std::min<int64_t>(static_cast<int64_t>(centre + support + 0.5), in_size);
    const int64_t n = high - low;
    double total = 0.0;
    for (int64_t x = 0; x < n; ++x) {
      // Times 1 / filter_scale, not divided by it: Pillow's rounding, to the last bit.
      k[x] = filter((static_cast<double>(x + low) - centre + 0.5) * inverse_scale);
      total += k[x];
    }
    c.first[out] = low;
    c.count[out] = n;
    for (int64_t x = 0; x < n; ++x) {
      const double w = (total != 0.0 ? k[x] / total : 0.0) * (1 << kPrecisionBits);
      c.weights[out * c.count_max + x] =
          static_cast<int32_t>(w < 0 ? std::trunc(-0.5 + w) : std::trunc(0.5 + w));
    }
  }
  return c;
}

uint8_t clip8(int64_t accumulated) {
  const int64_t v = accumulated >> kPrecisionBits;
  return static_cast<uint8_t>(std::clamp<int64_t>(v, 0, 255));
}

Image resample_horizontal(const Image& in, int64_t width, Interpolation interpolation) {
  const auto c = coefficients(in.width, width, interpolation);
  Image out(in.height, width, in.channels);
  const int64_t ch = in.channels;
  for (int64_t y = 0; y < in.height; ++y) {
    const uint8_t* row = in.pixels.data() + y * in.width * ch;
    uint8_t* dst = out.pixels.data() + y * width * ch;
    for (int64_t x = 0; x < width; ++x) {
      const int32_t* w = c.weights.data() + x * c.count_max;
      const uint8_t* src = row + c.first[x] * ch;
      for (int64_t k = 0; k < ch; ++k) {
        int64_t sum = int64_t{1} << (kPrecisionBits - 1);
        for (int64_t i = 0; i < c.count[x]; ++i) sum += int64_t{src[i * ch + k]} * w[i];
        dst[x * ch + k] = clip8(sum);
      }
    }
  }
  return out;
}

Image resample_vertical(const Image& in, int64_t height, Interpolation interpolation) {
  const auto c = coefficients(in.height, height, interpolation);
  Image out(height, in.width, in.channels);
  const int64_t row_bytes = in.width * in.channels;
  std::vector<int64_t> sums(static_cast<size_t>(row_bytes));
  for (int64_t y = 0; y < height; ++y) {
    std::fill(sums.begin(), sums.end(), int64_t{1} << (kPrecisionBits - 1));
    const int32_t* w = c.weights.data() + y * c.count_max;
    for (int64_t i = 0; i < c.count[y]; ++i) {
      const uint8_t* src = in.pixels.data() + (c.first[y] + i) * row_bytes;
      for (int64_t b = 0; b < row_bytes; ++b) sums[b] += int64_t{src[b]} * w[i];
    }
    uint8_t* dst = out.pixels.data() + y * row_bytes;
    for (int64_t b = 0; b < row_bytes; ++b) dst[b] = clip8(sums[b]);
  }
  return out;
}

}  // namespace

Image resize(const Image& image, int64_t height, int64_t width, Interpolation interpolation) {
  if (height == image.height && width == image.width) return image;
  Image out = width == image.width ? image : resample_horizontal(image, width, interpolation);
  if (height != image.height) out = resample_vertical(out, height, interpolation);
  return out;
}

Image crop(const Image& image, int64_t top, int64_t left, int64_t height, int64_t width) {
  Image out(height, width, image.channels);
  const int64_t ch = image.channels;
  // Outside the image is black, as Pillow's crop pads (torchvision's CenterCrop pads first).
  for (int64_t y = 0; y < height; ++y) {
    const int64_t sy = top + y;
    if (sy < 0 || sy >= image.height) continue;
    for (int64_t x = 0; x < width; ++x) {
      const int64_t sx = left + x;
      if (sx < 0 || sx >= image.width) continue;
      std::copy_n(image.pixels.data() + (sy * image.width + sx) * ch, ch,
                  out.pixels.data() + (y * width + x) * ch);
    }
  }
  return out;
}

void flip_horizontal(Image& image) {
  const int64_t ch = image.channels;
  for (int64_t y = 0; y < image.height; ++y) {
    uint8_t* row = image.pixels.data() + y * image.width * ch;
    for (int64_t l = 0, r = image.width - 1; l < r; ++l, --r) {
      std::swap_ranges(row + l * ch, row + (l + 1) * ch, row + r * ch);
    }
  }
}

CropBox random_resized_crop_box(int64_t height, int64_t width, const double scale[2],
                                const double ratio[2], SampleRandom& random) {
  const double area = static_cast<double>(height * width);
  const double log_low = std::log(ratio[0]), log_high = std::log(ratio[1]);
  for (int attempt = 0; attempt < 10; ++attempt) {
    const double target_area = area * random.uniform(scale[0], scale[1]);
    const double aspect = std::exp(random.uniform(log_low, log_high));
    const auto w = static_cast<int64_t>(std::lround(std::sqrt(target_area * aspect)));
    const auto h = static_cast<int64_t>(std::lround(std::sqrt(target_area / aspect)));
    if (w > 0 && h > 0 && w <= width && h <= height) {
      const int64_t top = random.integer(0, height - h), left = random.integer(0, width - w);
      return {top, left, h, w};
    }
  }
  const double in_ratio = static_cast<double>(width) / static_cast<double>(height);
  int64_t w = width, h = height;
  if (in_ratio < ratio[0]) {
    h = static_cast<int64_t>(std::lround(static_cast<double>(w) / ratio[0]));
  } else if (in_ratio > ratio[1]) {
    w = static_cast<int64_t>(std::lround(static_cast<double>(h) * ratio[1]));
  }
  return {(height - h) / 2, (width - w) / 2, h, w};
}

Image resize_and_centre_crop(const Image& image, int64_t size, double crop_ratio,
                             Interpolation interpolation) {
  const auto shorter = static_cast<int64_t>(std::floor(static_cast<double>(size) / crop_ratio));
  int64_t h = shorter, w = shorter;
  // torchvision's Resize(int): the shorter side becomes `shorter`, the longer one is truncated.
  if (image.height < image.width) {
    w = static_cast<int64_t>(static_cast<double>(shorter) * static_cast<double>(image.width) /
                             static_cast<double>(image.height));
  } else if (image.width < image.height) {
    h = static_cast<int64_t>(static_cast<double>(shorter) * static_cast<double>(image.height) /
                             static_cast<double>(image.width));
  }
  Image resized = resize(image, h, w, interpolation);
  // Python's round() (half to even), as CenterCrop computes the offsets.
  const auto top = static_cast<int64_t>(std::nearbyint(static_cast<double>(h - size) / 2.0));
  const auto left = static_cast<int64_t>(std::nearbyint(static_cast<double>(w - size) / 2.0));
  if (top == 0 && left == 0 && h == size && w == size) return resized;
  return crop(resized, top, left, size, size);
}

void to_normalised_planar(const Image& image, const float* mean, const float* std, float* out) {
  const int64_t plane = image.height * image.width, ch = image.channels;
  for (int64_t k = 0; k < ch; ++k) {
    // One multiply-add per pixel: (x / 255 - mean) / std = x * a + b.
    const float a = 1.0f / (255.0f * std[k]), b = -mean[k] / std[k];
    float* dst = out + k * plane;
    const uint8_t* src = image.pixels.data() + k;
    for (int64_t p = 0; p < plane; ++p) dst[p] = static_cast<float>(src[p * ch]) * a + b;
  }
}

void random_erasing(float* planes, int64_t channels, int64_t height, int64_t width,
                    double probability, SampleRandom& random) {
  if (!random.bernoulli(probability)) return;
  const double area = static_cast<double>(height * width);
  const double log_low = std::log(0.3), log_high = std::log(1.0 / 0.3);
  for (int attempt = 0; attempt < 10; ++attempt) {
    const double target_area = area * random.uniform(0.02, 1.0 / 3.0);
    const double aspect = std::exp(random.uniform(log_low, log_high));
    const auto h = static_cast<int64_t>(std::lround(std::sqrt(target_area * aspect)));
    const auto w = static_cast<int64_t>(std::lround(std::sqrt(target_area / aspect)));
    if (w < width && h < height) {
      const int64_t top = random.integer(0, height - h), left = random.integer(0, width - w);
      for (int64_t k = 0; k < channels; ++k) {
        for (int64_t y = top; y < top + h; ++y) {
          float* row = planes + (k * height + y) * width;
          for (int64_t x = left; x < left + w; ++x)
            row[x] = static_cast<float>(random.normal(0, 1));
        }
      }
      return;
    }
  }
}

}  // namespace exfusion
