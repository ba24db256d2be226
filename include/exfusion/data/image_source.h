// Where the image loader's samples come from: files of an image folder, decoded on demand, or
// images already in memory (CIFAR, IDX). Both hand out one sample at a time to any thread.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "exfusion/data/idx.h"
#include "exfusion/data/image.h"
#include "exfusion/data/image_folder.h"

namespace exfusion {

class ImageSource {
 public:
  virtual ~ImageSource() = default;
  virtual int64_t size() const = 0;
  virtual int64_t label(int64_t index) const = 0;
  // Sample `index` with the model's channel count; thread-safe. A file that cannot be read or
  // decoded throws InputError naming it.
  virtual Image load(int64_t index) const = 0;
};

class FolderImageSource : public ImageSource {
 public:
  FolderImageSource(ImageFolderListing listing, int64_t channels)
      : listing_(std::move(listing)), channels_(channels) {}
  int64_t size() const override { return static_cast<int64_t>(listing_.files.size()); }
  int64_t label(int64_t index) const override { return listing_.labels[index]; }
  Image load(int64_t index) const override;
  const ImageFolderListing& listing() const { return listing_; }

 private:
  ImageFolderListing listing_;
  int64_t channels_;
};

// uint8 [N, C, H, W] images and int64 [N] labels, copied out to interleaved Images.
class TensorImageSource : public ImageSource {
 public:
  explicit TensorImageSource(const ImageDataset& data);
  int64_t size() const override { return height_ == 0 ? 0 : static_cast<int64_t>(labels_.size()); }
  int64_t label(int64_t index) const override { return labels_[index]; }
  Image load(int64_t index) const override;

 private:
  std::vector<uint8_t> planes_;
  std::vector<int64_t> labels_;
  int64_t channels_ = 0, height_ = 0, width_ = 0;
};

}  // namespace exfusion
