// One decoded image as the data pipeline's workers handle it: 8-bit pixels in height × width ×
// channels order (interleaved, as decoders produce them), plain C++ so that decoding and
// augmentation run in worker threads without LibTorch's per-op overhead or thread pool.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace exfusion {

struct Image {
  int64_t height = 0;
  int64_t width = 0;
  int64_t channels = 0;         // 1 (grey), 3 (RGB) or 4 (RGBA)
  std::vector<uint8_t> pixels;  // height * width * channels bytes, row-major, interleaved

  Image() = default;
  Image(int64_t h, int64_t w, int64_t c, uint8_t fill = 0)
      : height(h), width(w), channels(c), pixels(static_cast<size_t>(h * w * c), fill) {}
  uint8_t& at(int64_t y, int64_t x, int64_t c) {
    return pixels[static_cast<size_t>((y * width + x) * channels + c)];
  }
  uint8_t at(int64_t y, int64_t x, int64_t c) const {
    return pixels[static_cast<size_t>((y * width + x) * channels + c)];
  }
};

}  // namespace exfusion
