// Image sources (see image_source.h): a folder's files are read and decoded by whichever
// worker asks; in-memory images are kept planar and interleaved per request.
#include "exfusion/data/image_source.h"

#include "exfusion/data/image_decode.h"

namespace exfusion {

Image FolderImageSource::load(int64_t index) const {
  return convert_channels(read_image_file(listing_.files[index]), channels_);
}

TensorImageSource::TensorImageSource(const ImageDataset& data) {
  const auto images = data.images.contiguous();
  TORCH_CHECK(images.scalar_type() == torch::kUInt8 && images.dim() == 4,
              "TensorImageSource expects uint8 [N, C, H, W] images, got ", images.sizes());
  channels_ = images.size(1);
  height_ = images.size(2);
  width_ = images.size(3);
  planes_.assign(images.data_ptr<uint8_t>(), images.data_ptr<uint8_t>() + images.numel());
  const auto labels = data.labels.to(torch::kInt64).contiguous();
  labels_.assign(labels.data_ptr<int64_t>(), labels.data_ptr<int64_t>() + labels.numel());
}

Image TensorImageSource::load(int64_t index) const {
  Image image(height_, width_, channels_);
  const int64_t plane = height_ * width_;
  const uint8_t* src = planes_.data() + index * channels_ * plane;
  for (int64_t c = 0; c < channels_; ++c) {
    for (int64_t p = 0; p < plane; ++p) image.pixels[p * channels_ + c] = src[c * plane + p];
  }
  return image;
}

}  // namespace exfusion
