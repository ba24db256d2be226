// The `data` section of a run: which IDX files, how batches are normalised, augmented and
// prefetched. Its fields are declared once (config/fields.h).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "exfusion/config/fields.h"

namespace exfusion {

struct DataConfig {
  std::string dir = "/usr/share/datasets/fashion-mnist";
  // Explicit IDX files override `dir`; all four or none.
  std::string train_images, train_labels, test_images, test_labels;
  bool augment = false;  // short schedules learn faster without it
  int64_t crop_padding = 2;
  bool horizontal_flip = true;
  std::vector<double> mean, std;  // per channel; empty: measured on the training set
  int64_t prefetch = 2;

  template <class Fields>
  void fields(Fields& f) {
    f("dir", dir, "directory with the four IDX files (MNIST names)");
    f("train_images", train_images, "IDX file of training images (all four files or none)");
    f("train_labels", train_labels, "IDX file of training labels");
    f("test_images", test_images, "IDX file of test images");
    f("test_labels", test_labels, "IDX file of test labels");
    f("augment", augment, "random crops and horizontal flips for training batches");
    f("crop_padding", crop_padding, "zero padding of the random crop",
      config::in_range<int64_t>(0, 256));
    f("horizontal_flip", horizontal_flip, "flip half the training images (with augment)");
    f("mean", mean, "per-channel mean; [] = measured on the training set");
    f("std", std, "per-channel std; [] = measured on the training set");
    f("prefetch", prefetch, "batches prepared ahead on the loader thread",
      config::in_range<int64_t>(1, 64));
  }
  void validate(const config::Location& at) const;
};

}  // namespace exfusion
