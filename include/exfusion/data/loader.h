// Batches of normalised (and, for training, augmented) images, prepared on a background
// thread. The order and every augmentation are pure functions of (seed, epoch, batch), so
// prefetching cannot change results and a resumed run sees the batches it would have seen.
#pragma once
#include <torch/types.h>

#include <optional>
#include <vector>

#include "exfusion/data/batch.h"
#include "exfusion/data/idx.h"
#include "exfusion/data/prefetch_queue.h"

namespace exfusion {

struct LoaderOptions {
  int64_t batch_size = 128;  // the global batch, of which `shard` picks this rank's part
  bool shuffle = true;
  bool drop_last = false;
  uint64_t seed = 0;
  bool augment = false;  // random crop (zero padding) + horizontal flip
  int64_t crop_padding = 2;
  bool horizontal_flip = true;
  std::vector<float> mean{0.f}, std{1.f};  // per channel, applied after scaling to [0, 1]
  int64_t prefetch = 2;                    // batches prepared ahead on a background thread
  DataShard shard;
};

// Batch::inputs are float32 [B, C, H, W] normalised images, Batch::targets int64 [B] labels.
class BatchLoader : public BatchSource {
 public:
  BatchLoader(ImageDataset data, LoaderOptions options);
  BatchLoader(const BatchLoader&) = delete;
  BatchLoader& operator=(const BatchLoader&) = delete;

  int64_t batches_per_epoch() const override;
  int64_t size() const override { return data_.labels.size(0); }

  // Starts epoch `epoch` at its batch `skip_batches`, cancelling any epoch in progress. The
  // sample order and every augmentation are pure functions of (seed, epoch, batch index), so
  // a resumed run sees exactly the batches an uninterrupted run would have seen.
  void start_epoch(int64_t epoch, int64_t skip_batches = 0) override;
  // The next batch of the current epoch; nullopt at its end. Rethrows a worker's error.
  std::optional<Batch> next() override;

 private:
  torch::Tensor epoch_order(int64_t epoch) const;
  Batch assemble(const torch::Tensor& order, int64_t epoch, int64_t index) const;

  ImageDataset data_;
  LoaderOptions options_;
  torch::Tensor mean_, std_;    // [1, C, 1, 1]
  PrefetchQueue<Batch> queue_;  // last: its producer, which reads the members above, stops first
};

}  // namespace exfusion
