// The data section's preset and cross-field checks (see image_data_config.h).
#include "exfusion/data/image_data_config.h"

#include "exfusion/data/rand_augment.h"
#include "exfusion/models/model.h"
#include "exfusion/util/error.h"

namespace exfusion {

void ImageDataConfig::apply_preset(const std::string& name, const config::Location& at) {
  if (name != "deit") config::fail(at, "preset", name, "deit");
  augment = true;
  random_resized_crop = true;
  crop_scale = {0.08, 1.0};
  crop_ratio = {3.0 / 4.0, 4.0 / 3.0};
  interpolation = "bicubic";
  horizontal_flip = true;
  rand_augment = "rand-m9-mstd0.5-inc1";
  random_erasing = 0.25;
  repeated_augmentation = 3;
  mixup = 0.8;
  cutmix = 1.0;
  mixup_prob = 1.0;
  mixup_switch_prob = 0.5;
  eval_crop_ratio = 0.875;
  mean = {0.485, 0.456, 0.406};  // ImageNet's, as timm's IMAGENET_DEFAULT_MEAN / _STD
  std = {0.229, 0.224, 0.225};
}

void ImageDataConfig::validate(const config::Location& at) const {
  for (const auto s : std) {
    if (!(s > 0)) config::fail(at, "std", std, "positive values");
  }
  const int explicit_files =
      !train_images.empty() + !train_labels.empty() + !test_images.empty() + !test_labels.empty();
  if (explicit_files != 0 && explicit_files != 4) {
    config::fail(at, "train_images", train_images,
                 "all four of train_images, train_labels, test_images, test_labels");
  }
  if (explicit_files != 0 && format != "idx") {
    config::fail(at, "train_images", train_images, "no IDX files with format " + format);
  }
  if (crop_scale.size() != 2 || !(crop_scale[0] > 0) || !(crop_scale[0] <= crop_scale[1]) ||
      !(crop_scale[1] <= 1)) {
    config::fail(at, "crop_scale", crop_scale, "[low, high] with 0 < low <= high <= 1");
  }
  if (crop_ratio.size() != 2 || !(crop_ratio[0] > 0) || !(crop_ratio[0] <= crop_ratio[1]) ||
      !(crop_ratio[1] < 100)) {
    config::fail(at, "crop_ratio", crop_ratio, "[low, high] with 0 < low <= high < 100");
  }
  if (!rand_augment.empty())
    parse_rand_augment(rand_augment, at.source + ": " + at.key_path("rand_augment"));
}

void ImageDataConfig::validate_with(const ModelOptions& model, const config::Location& at) const {
  const auto shapes = model.input_shapes();
  if (shapes.size() != 1 || shapes.front().size() != 3) {
    throw InputError(at.source + ": the image data section feeds images, and the model takes " +
                     nlohmann::json(shapes).dump() +
                     " per sample (a task of other data: set task)");
  }
  const auto channels = static_cast<size_t>(shapes.front().front());
  if (!mean.empty() && mean.size() != channels)
    config::fail(at, "mean", mean, "one value per channel");
  if (!std.empty() && std.size() != channels) config::fail(at, "std", std, "one value per channel");
}

nlohmann::json ImageDataConfig::evaluation_entries() const {
  return {{"mean", mean}, {"std", std}};
}

std::string ImageDataConfig::missing_for_evaluation() const {
  return mean.empty() || std.empty()
             ? "input normalisation; pass the one the model was trained with: --set "
               "data.mean=[...] data.std=[...] (one value per channel)"
             : "";
}

bool ImageDataConfig::uses_image_pipeline() const {
  return format == "folder" ||
         (augment && (random_resized_crop || !rand_augment.empty() || random_erasing > 0 ||
                      repeated_augmentation > 1 || mixup > 0 || cutmix > 0));
}

}  // namespace exfusion
