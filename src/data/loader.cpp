// Background batch loader (see loader.h): one producer thread per epoch fills a bounded queue
// (PrefetchQueue), which cancels and joins the previous epoch's producer before it starts.
#include "exfusion/data/loader.h"

#include <ATen/CPUGeneratorImpl.h>

#include "exfusion/util/error.h"
#include "exfusion/util/serial_torch_ops.h"

namespace exfusion {
namespace {

uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// A fresh generator per (seed, epoch, batch) rather than one shared generator: the random
// draws then cannot depend on how far ahead the worker ran or where an epoch was resumed.
// batch == -1 is the epoch's shuffle.
at::Generator generator_for(uint64_t seed, int64_t epoch, int64_t batch) {
  const uint64_t mixed = splitmix64(splitmix64(splitmix64(seed) ^ static_cast<uint64_t>(epoch)) ^
                                    static_cast<uint64_t>(batch + 1));
  return at::make_generator<at::CPUGeneratorImpl>(mixed);
}

}  // namespace

BatchLoader::BatchLoader(ImageDataset data, LoaderOptions options)
    : data_(std::move(data)), options_(std::move(options)), queue_(options_.prefetch) {
  TORCH_CHECK(data_.images.scalar_type() == torch::kUInt8 && data_.images.dim() == 4,
              "BatchLoader expects uint8 [N, C, H, W] images, got ", data_.images.sizes());
  TORCH_CHECK(data_.labels.scalar_type() == torch::kInt64 && data_.labels.dim() == 1 &&
                  data_.labels.size(0) == data_.images.size(0),
              "BatchLoader expects int64 [N] labels, one per image, got ", data_.labels.sizes());
  const auto channels = data_.images.size(1);
  if (options_.batch_size < 1) throw InputError("train.batch_size: expected at least 1");
  if (options_.prefetch < 1) throw InputError("data.prefetch: expected at least 1");
  TORCH_CHECK(options_.shard.count >= 1 && options_.shard.index >= 0 &&
                  options_.shard.index < options_.shard.count,
              "BatchLoader: shard ", options_.shard.index, " of ", options_.shard.count);
  if (options_.crop_padding < 0) {
    throw InputError("data.crop_padding: expected a non-negative padding");
  }
  if (static_cast<int64_t>(options_.mean.size()) != channels ||
      static_cast<int64_t>(options_.std.size()) != channels) {
    throw InputError("data.mean/data.std: expected " + std::to_string(channels) +
                     " values each, one per image channel");
  }
  for (const auto s : options_.std) {
    if (!(s > 0)) throw InputError("data.std: expected positive values");
  }
  mean_ = torch::tensor(options_.mean).view({1, channels, 1, 1});
  std_ = torch::tensor(options_.std).view({1, channels, 1, 1});
}

int64_t BatchLoader::batches_per_epoch() const {
  const auto n = size(), b = options_.batch_size;
  return options_.drop_last ? n / b : (n + b - 1) / b;
}

torch::Tensor BatchLoader::epoch_order(int64_t epoch) const {
  if (!options_.shuffle) return torch::arange(size());
  auto generator = generator_for(options_.seed, epoch, -1);
  return torch::randperm(size(), generator);
}

Batch BatchLoader::assemble(const torch::Tensor& order, int64_t epoch, int64_t index) const {
  const auto begin = index * options_.batch_size;
  const auto count = std::min(options_.batch_size, size() - begin);
  // This shard's rows of the global batch; the random draws below are made for the whole global
  // batch and cut the same way, so every sample gets the augmentation one process gives it.
  const auto shards = options_.shard.count, shard = options_.shard.index;
  const auto first = count * shard / shards, rows = count * (shard + 1) / shards - first;
  const auto indices = order.narrow(0, begin + first, rows);
  // Augmenting the uint8 batch before conversion moves a quarter of the bytes.
  auto images = data_.images.index_select(0, indices);
  if (options_.augment) {
    auto generator = generator_for(options_.seed, epoch, index);
    const auto pad = options_.crop_padding;
    if (pad > 0) {
      const auto channels = images.size(1), h = images.size(2), w = images.size(3);
      const auto padded = torch::constant_pad_nd(images, {pad, pad, pad, pad}, 0).flatten(2);
      const auto offsets =
          torch::randint(0, 2 * pad + 1, {count, 2}, generator).narrow(0, first, rows);
      const auto row = offsets.select(1, 0).view({rows, 1, 1}) + torch::arange(h).view({1, h, 1});
      const auto col = offsets.select(1, 1).view({rows, 1, 1}) + torch::arange(w).view({1, 1, w});
      // One gather crops every sample at its own offset within its padded plane.
      const auto source = (row * (w + 2 * pad) + col).view({rows, 1, h * w});
      images =
          padded.gather(2, source.expand({rows, channels, h * w})).view({rows, channels, h, w});
    }
    if (options_.horizontal_flip) {
      const auto flip =
          torch::rand({count}, generator).narrow(0, first, rows).lt(0.5).view({rows, 1, 1, 1});
      images = torch::where(flip, images.flip({3}), images);
    }
  }
  images = images.to(torch::kFloat32).div_(255.0);
  images.sub_(mean_).div_(std_);
  return {images, data_.labels.index_select(0, indices)};
}

void BatchLoader::start_epoch(int64_t epoch, int64_t skip_batches) {
  TORCH_CHECK(skip_batches >= 0, "start_epoch: skip_batches must be non-negative, got ",
              skip_batches);
  queue_.start([this, epoch, skip_batches, total = batches_per_epoch(),
                order = epoch_order(epoch)](const PrefetchQueue<Batch>::Push& push) {
    // The training thread's OpenMP team has the cores; this thread's operators are small.
    const SerialTorchOpsGuard serial;
    for (int64_t index = skip_batches; index < total; ++index) {
      if (!push(assemble(order, epoch, index))) return;
    }
  });
}

std::optional<Batch> BatchLoader::next() { return queue_.next(); }

}  // namespace exfusion
