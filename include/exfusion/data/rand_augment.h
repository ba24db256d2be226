// timm's RandAugment (timm/data/auto_augment.py, e.g. "rand-m9-mstd0.5-inc1") on plain HWC
// images: each op reproduces the Pillow call timm makes (ImageOps, ImageEnhance, Image.transform)
// bit for bit, in plain C++ so that it runs in the data loader's worker threads.
#pragma once
#include <cstdint>
#include <string>

#include "exfusion/data/image.h"
#include "exfusion/data/image_transforms.h"
#include "exfusion/data/sample_random.h"

namespace exfusion {

struct RandAugmentOptions {
  int64_t num_ops = 2;         // n: ops per image, chosen uniformly with replacement
  double magnitude = 9;        // m, on timm's 0..10 scale
  double magnitude_std = 0.5;  // mstd: magnitude ~ N(m, mstd) per op; > 100 (or inf): U(0, m)
  double magnitude_max = 10;   // mmax: the magnitude is clipped to [0, mmax] (0 means 10, as timm)
  bool increasing = true;      // inc1: timm's _RAND_INCREASING_TRANSFORMS, else _RAND_TRANSFORMS
  double probability = 0.5;    // p: each chosen op applies with this probability
};

// timm's rand_augment_transform config string: "rand" then dash-separated keys m, n, mstd,
// mmax, inc, p, each followed by its number (m, n, mmax and inc integers, as timm's int()).
// Anything else (timm's transform-set key t too) is an InputError naming `where` and the key.
RandAugmentOptions parse_rand_augment(const std::string& spec, const std::string& where);

// One RandAugment application, as timm's RandAugment.__call__: num_ops ops drawn uniformly with
// replacement from the op list; each applies with `probability` at a magnitude drawn as above,
// mapped by the op's timm level function (with its random sign), and the geometric ops pick
// bilinear or bicubic at random (timm's default when the interpolation is 'random'). `fill` is
// the colour of the area the geometric ops uncover (timm: round(255 * mean), (124, 116, 104)
// for ImageNet); a greyscale image uses fill[0]. Images have 1 (Pillow's L) or 3 (RGB)
// channels; any other count is an InputError, as Pillow refuses most of these ops on RGBA.
Image rand_augment(const Image& image, const RandAugmentOptions& options, SampleRandom& random,
                   const uint8_t fill[3]);

// One op by timm's name (AutoContrast, Equalize, Invert, Rotate, Posterize[Increasing],
// Solarize[Increasing], SolarizeAdd, Color/Contrast/Brightness/Sharpness[Increasing], ShearX,
// ShearY, TranslateXRel, TranslateYRel), at `level` as timm's level function returns it:
// degrees for Rotate (counter-clockwise, about the centre), bits kept for Posterize, the
// threshold for Solarize, the amount added for SolarizeAdd, the enhance factor, the shear
// factor, the translation as a fraction of the width (height for Y); the integer levels are
// truncated. Deterministic; an unknown name is an InputError.
Image apply_rand_augment_op(const std::string& name, const Image& image, double level,
                            const uint8_t fill[3],
                            Interpolation interpolation = Interpolation::Bilinear);

}  // namespace exfusion
