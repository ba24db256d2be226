// One sample's way from a decoded image to the model's input, as timm's create_transform
// builds it: for training random-resized crop, flip, RandAugment, normalisation and random
// erasing; for evaluation resize + centre crop and normalisation. Each step is optional.
#pragma once
#include <cstdint>
#include <optional>
#include <vector>

#include "exfusion/data/image.h"
#include "exfusion/data/image_transforms.h"
#include "exfusion/data/rand_augment.h"
#include "exfusion/data/sample_random.h"

namespace exfusion {

struct ImagePipelineOptions {
  bool train = false;
  int64_t size = 224;  // the model's square input
  int64_t channels = 3;
  Interpolation interpolation = Interpolation::Bicubic;
  bool random_resized_crop = false;  // training; else resize + centre crop as for evaluation
  double crop_scale[2] = {0.08, 1.0};
  double crop_ratio[2] = {3.0 / 4.0, 4.0 / 3.0};
  bool horizontal_flip = false;                    // training
  std::optional<RandAugmentOptions> rand_augment;  // training
  double random_erasing = 0.0;                     // training: probability
  double eval_crop_ratio = 1.0;  // the resize before the centre crop is size / ratio
  std::vector<float> mean, std;  // per channel
};

// Writes the sample into out[channels * size * size] (planar, normalised).
void transform_sample(const Image& image, const ImagePipelineOptions& options, SampleRandom& random,
                      float* out);

}  // namespace exfusion
