// The `data` section of image classification (tasks/image_classification.h): which files (IDX,
// an image folder tree or CIFAR), how samples are normalised and augmented, and how many
// workers prepare them. Its fields are declared once (config/fields.h); `preset: deit` sets
// DeiT's training recipe for images.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "exfusion/config/fields.h"

namespace exfusion {

class ModelOptions;

struct ImageDataConfig {
  std::string format = "idx";
  std::string dir = "/usr/share/datasets/fashion-mnist";
  // Explicit IDX files override `dir`; all four or none.
  std::string train_images, train_labels, test_images, test_labels;
  std::string cifar_labels = "fine";
  bool augment = false;  // short schedules learn faster without it
  int64_t crop_padding = 2;
  bool horizontal_flip = true;
  bool random_resized_crop = false;
  std::vector<double> crop_scale{0.08, 1.0};
  std::vector<double> crop_ratio{3.0 / 4.0, 4.0 / 3.0};
  std::string interpolation = "bicubic";
  std::string rand_augment;  // timm's spec, e.g. rand-m9-mstd0.5-inc1; "" = off
  double random_erasing = 0.0;
  int64_t repeated_augmentation = 1;
  double mixup = 0.0, cutmix = 0.0, mixup_prob = 1.0, mixup_switch_prob = 0.5;
  double eval_crop_ratio = 1.0;
  std::vector<double> mean, std;  // per channel; empty: measured on the training set
  int64_t workers = 4;
  bool skip_bad_images = false;
  int64_t prefetch = 2;

  template <class Fields>
  void fields(Fields& f) {
    f("format", format,
      "idx (MNIST-style files), folder (<split>/<class>/<image> JPEG/PNG tree) or cifar "
      "(CIFAR-10/100 binary files)",
      config::one_of({"idx", "folder", "cifar"}));
    f("dir", dir,
      "the data: a directory of the four IDX files (MNIST names), a tree with train/ and val/ "
      "class folders, or CIFAR's binary files");
    f("train_images", train_images, "IDX file of training images (all four files or none)");
    f("train_labels", train_labels, "IDX file of training labels");
    f("test_images", test_images, "IDX file of test images");
    f("test_labels", test_labels, "IDX file of test labels");
    f("cifar_labels", cifar_labels, "CIFAR-100's fine (100) or coarse (20) labels",
      config::one_of({"fine", "coarse"}));
    f("augment", augment, "augment training samples (every option below needs it)");
    f("crop_padding", crop_padding,
      "zero padding of the random crop of idx/cifar images (when no option of the image "
      "pipeline below is on)",
      config::in_range<int64_t>(0, 256));
    f("horizontal_flip", horizontal_flip, "flip half the training images (with augment)");
    f("random_resized_crop", random_resized_crop,
      "random-resized crop to the model's size (torchvision's RandomResizedCrop)");
    f("crop_scale", crop_scale, "area fraction range of the random-resized crop");
    f("crop_ratio", crop_ratio, "aspect ratio range of the random-resized crop");
    f("interpolation", interpolation, "resampling of crops and resizes (Pillow's filters)",
      config::one_of({"bicubic", "bilinear"}));
    f("rand_augment", rand_augment,
      "timm's RandAugment spec, e.g. rand-m9-mstd0.5-inc1; \"\" = off");
    f("random_erasing", random_erasing, "probability of timm's random erasing (pixel mode)",
      config::in_range(0.0, 1.0));
    f("repeated_augmentation", repeated_augmentation,
      "times each image repeats in an epoch's order, augmented anew (DeiT: 3; 1 = off)",
      config::in_range<int64_t>(1, 16));
    f("mixup", mixup, "Mixup's Beta alpha (0 = off)", config::in_range(0.0, 100.0));
    f("cutmix", cutmix, "CutMix's Beta alpha (0 = off)", config::in_range(0.0, 100.0));
    f("mixup_prob", mixup_prob, "probability of mixing a batch", config::in_range(0.0, 1.0));
    f("mixup_switch_prob", mixup_switch_prob, "probability of CutMix when both are on",
      config::in_range(0.0, 1.0));
    f("eval_crop_ratio", eval_crop_ratio,
      "evaluation: resize to size / ratio, then the centre crop (timm's crop_pct)",
      config::Check<double>{"a value in (0, 1]", [](double r) { return r > 0 && r <= 1; }});
    f("mean", mean, "per-channel mean; [] = measured on the training set");
    f("std", std, "per-channel std; [] = measured on the training set");
    f("workers", workers, "threads that decode and augment samples (image pipeline)",
      config::in_range<int64_t>(1, 256));
    f("skip_bad_images", skip_bad_images,
      "skip unreadable images (counted as skipped_images in metrics.jsonl) instead of stopping");
    f("prefetch", prefetch, "batches prepared ahead of the training step",
      config::in_range<int64_t>(1, 64));
  }
  // DeiT's recipe (timm's create_transform and Mixup arguments in DeiT's main.py).
  void apply_preset(const std::string& name, const config::Location& at);
  void validate(const config::Location& at) const;
  // A normalisation states one value per channel of the model's input.
  void validate_with(const ModelOptions& model, const config::Location& at) const;
  // What evaluating an exported model needs, for its model.json: {"mean", "std"}.
  nlohmann::json evaluation_entries() const;
  // "" when the normalisation is stated; else what is missing and how to state it.
  std::string missing_for_evaluation() const;
  // Whether samples go through the per-sample image pipeline (workers, image_pipeline.h)
  // rather than the in-memory batch loader: always for folders, else when an option of it is on.
  bool uses_image_pipeline() const;
};

}  // namespace exfusion
