// IDX files (the MNIST/Fashion-MNIST format: magic, big-endian dims, raw data), raw or
// gzip-compressed, and image/label pairs built from them. Every malformed file is
// reported with its path and what was expected.
#pragma once
#include <torch/types.h>

#include <filesystem>
#include <utility>
#include <vector>

namespace exfusion {

inline constexpr const char* kDefaultFashionMnistDir = "/usr/share/datasets/fashion-mnist";

// Any IDX file, as a tensor of its own dtype and shape.
torch::Tensor read_idx(const std::filesystem::path& path);

struct ImageDataset {
  torch::Tensor images;  // uint8 [N, C, H, W]
  torch::Tensor labels;  // int64 [N]
};

// Images: uint8 [N, H, W] (one channel) or [N, H, W, C]; labels: uint8 [N].
ImageDataset load_idx_pair(const std::filesystem::path& images,
                           const std::filesystem::path& labels);

struct IdxPaths {
  std::filesystem::path train_images, train_labels, test_images, test_labels;
};

// The four MNIST-named files in `dir` (train-images-idx3-ubyte, …, t10k-labels-idx1-ubyte),
// each with or without `.gz`.
IdxPaths idx_paths_in(const std::filesystem::path& dir);

// Per-channel mean and standard deviation of pixels scaled to [0, 1].
std::pair<std::vector<float>, std::vector<float>> channel_mean_std(const torch::Tensor& images_u8);

}  // namespace exfusion
