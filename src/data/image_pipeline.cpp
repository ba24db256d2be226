// The per-sample pipeline (see image_pipeline.h), in timm's transforms_imagenet_train order:
// crop and resize, flip, RandAugment on the 8-bit image, then normalise and erase.
#include "exfusion/data/image_pipeline.h"

#include <algorithm>
#include <cmath>

namespace exfusion {

void transform_sample(const Image& image, const ImagePipelineOptions& options, SampleRandom& random,
                      float* out) {
  const int64_t size = options.size;
  Image sample;
  if (options.train && options.random_resized_crop) {
    const auto box = random_resized_crop_box(image.height, image.width, options.crop_scale,
                                             options.crop_ratio, random);
    sample = resize(crop(image, box.top, box.left, box.height, box.width), size, size,
                    options.interpolation);
  } else {
    sample = resize_and_centre_crop(image, size, options.eval_crop_ratio, options.interpolation);
  }
  if (options.train && options.horizontal_flip && random.bernoulli(0.5)) flip_horizontal(sample);
  if (options.train && options.rand_augment) {
    // timm fills the geometric ops' uncovered area with the dataset mean.
    uint8_t fill[3];
    for (int c = 0; c < 3; ++c) {
      const float mean = options.mean[std::min<size_t>(c, options.mean.size() - 1)];
      fill[c] = static_cast<uint8_t>(std::clamp(std::lround(mean * 255.0f), 0L, 255L));
    }
    sample = rand_augment(sample, *options.rand_augment, random, fill);
  }
  to_normalised_planar(sample, options.mean.data(), options.std.data(), out);
  if (options.train && options.random_erasing > 0) {
    random_erasing(out, sample.channels, size, size, options.random_erasing, random);
  }
}

}  // namespace exfusion
