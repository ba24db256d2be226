// The per-image steps of the training and evaluation pipelines, as torchvision and timm apply
// them to PIL images: Pillow's resampling (bit for bit, fixed-point), crops and flips, the
// random-resized-crop box, random erasing, and the conversion to normalised planar floats.
#pragma once
#include <cstdint>
#include <vector>

#include "exfusion/data/image.h"
#include "exfusion/data/sample_random.h"

namespace exfusion {

enum class Interpolation { Bilinear, Bicubic };

// Pillow's Image.resize with its antialiasing filter support (what torchvision's Resize does
// to a PIL image): horizontal pass, then vertical, each in Pillow's 22-bit fixed point.
Image resize(const Image& image, int64_t height, int64_t width, Interpolation interpolation);
Image crop(const Image& image, int64_t top, int64_t left, int64_t height, int64_t width);
void flip_horizontal(Image& image);

struct CropBox {
  int64_t top = 0, left = 0, height = 0, width = 0;
};

// torchvision's RandomResizedCrop.get_params: ten tries at an area fraction uniform in `scale`
// and a log-uniform aspect ratio in `ratio`, then the centre crop with the ratio clamped.
CropBox random_resized_crop_box(int64_t height, int64_t width, const double scale[2],
                                const double ratio[2], SampleRandom& random);

// timm's evaluation transform: the shorter side resized to floor(size / crop_ratio) (aspect
// kept), then the centre size × size crop (torchvision's CenterCrop rounding).
Image resize_and_centre_crop(const Image& image, int64_t size, double crop_ratio,
                             Interpolation interpolation);

// Planar floats (x / 255 - mean[c]) / std[c], written to out[channels * height * width].
void to_normalised_planar(const Image& image, const float* mean, const float* std, float* out);

// timm's RandomErasing in its 'pixel' mode with one box: with `probability`, a box of area
// fraction uniform in [0.02, 1/3] and log-uniform aspect in [0.3, 1/0.3] (ten tries) is
// filled with N(0, 1) values in the normalised planar image `planes` [channels, h, w].
void random_erasing(float* planes, int64_t channels, int64_t height, int64_t width,
                    double probability, SampleRandom& random);

}  // namespace exfusion
