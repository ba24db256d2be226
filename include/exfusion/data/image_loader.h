// Batches from an ImageSource, decoded and augmented by a pool of worker threads that fill a
// bounded queue in batch order. Every random draw comes from a stream of (seed, epoch, batch,
// position), so the batches do not depend on the worker count, and a resumed run sees the
// batches it would have seen.
#pragma once
#include <torch/types.h>

#include <condition_variable>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "exfusion/data/batch.h"
#include "exfusion/data/batch_mixing.h"
#include "exfusion/data/image_pipeline.h"
#include "exfusion/data/image_source.h"

namespace exfusion {

struct ImageLoaderOptions {
  int64_t batch_size = 128;  // the global batch, of which `shard` picks this rank's part
  bool shuffle = true;
  bool drop_last = false;
  uint64_t seed = 0;
  int64_t workers = 4;   // decoding + augmentation threads
  int64_t prefetch = 2;  // finished batches kept ahead of the consumer
  DataShard shard;
  // Repeated augmentation (DeiT's RASampler): each image of the epoch's order appears this
  // many times in a row, with its own augmentation each time; the epoch keeps its length.
  int64_t repeats = 1;
  ImagePipelineOptions pipeline;
  MixingOptions mixing;          // Mixup/CutMix within this rank's batch, as timm under DDP
  int64_t classes = 0;           // for the soft targets of mixing
  bool skip_bad_images = false;  // else a bad file is an error naming it
  bool pin_memory = false;       // page-locked batches, for asynchronous copies to CUDA
};

// Batch::inputs float32 [B, C, size, size]; Batch::targets int64 [B], or float32 [B, classes]
// soft targets when mixing is on. With skip_bad_images a batch may be short by its bad files.
class ImageLoader : public BatchSource {
 public:
  ImageLoader(std::shared_ptr<const ImageSource> source, ImageLoaderOptions options);
  ~ImageLoader() override;
  ImageLoader(const ImageLoader&) = delete;
  ImageLoader& operator=(const ImageLoader&) = delete;

  int64_t batches_per_epoch() const override;
  int64_t size() const override { return source_->size(); }
  void start_epoch(int64_t epoch, int64_t skip_batches = 0) override;
  std::optional<Batch> next() override;
  bool may_skip() const override { return options_.skip_bad_images; }

  // The epoch's sample order (after repetition), a pure function of (seed, epoch).
  std::vector<int64_t> epoch_order(int64_t epoch) const;
  // Batch `index` of epoch `epoch` for this shard, on the calling thread.
  Batch assemble(const std::vector<int64_t>& order, int64_t epoch, int64_t index) const;

 private:
  void stop_workers();
  void work(const std::vector<int64_t>& order, int64_t epoch, int64_t total);

  std::shared_ptr<const ImageSource> source_;
  ImageLoaderOptions options_;

  std::vector<std::thread> workers_;
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::vector<int64_t> order_;
  std::map<int64_t, Batch> ready_;
  std::map<int64_t, std::exception_ptr> failed_;
  int64_t next_to_claim_ = 0, next_to_return_ = 0, total_ = 0;
  bool cancel_ = false;
};

}  // namespace exfusion
