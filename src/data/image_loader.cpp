// The worker-pool image loader (see image_loader.h). Worker threads claim whole batches in
// order, so up to `workers` batches are built at once; the consumer takes them back in order
// from a map, and a worker waits while `prefetch` finished batches are ahead of it.
#include "exfusion/data/image_loader.h"

#include <algorithm>
#include <numeric>

#include "exfusion/util/error.h"
#include "exfusion/util/serial_torch_ops.h"

namespace exfusion {

ImageLoader::ImageLoader(std::shared_ptr<const ImageSource> source, ImageLoaderOptions options)
    : source_(std::move(source)), options_(std::move(options)) {
  const auto& p = options_.pipeline;
  TORCH_CHECK(options_.batch_size >= 1 && options_.workers >= 1 && options_.prefetch >= 1 &&
                  options_.repeats >= 1,
              "ImageLoader: batch_size, workers, prefetch and repeats must be positive");
  TORCH_CHECK(options_.shard.count >= 1 && options_.shard.index >= 0 &&
                  options_.shard.index < options_.shard.count,
              "ImageLoader: shard ", options_.shard.index, " of ", options_.shard.count);
  TORCH_CHECK(static_cast<int64_t>(p.mean.size()) == p.channels &&
                  static_cast<int64_t>(p.std.size()) == p.channels,
              "ImageLoader: one mean and std per channel");
  TORCH_CHECK(!options_.mixing.enabled() || options_.classes > 0,
              "ImageLoader: mixing needs the class count");
}

ImageLoader::~ImageLoader() { stop_workers(); }

int64_t ImageLoader::batches_per_epoch() const {
  const auto n = size(), b = options_.batch_size;
  return options_.drop_last ? n / b : (n + b - 1) / b;
}

std::vector<int64_t> ImageLoader::epoch_order(int64_t epoch) const {
  const int64_t n = size();
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  if (!options_.shuffle) return order;
  auto random = sample_random(options_.seed, epoch, -1, -1);
  for (int64_t i = n - 1; i > 0; --i) std::swap(order[i], order[random.integer(0, i)]);
  if (options_.repeats == 1) return order;
  std::vector<int64_t> repeated(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) repeated[i] = order[i / options_.repeats];
  return repeated;
}

Batch ImageLoader::assemble(const std::vector<int64_t>& order, int64_t epoch, int64_t index) const {
  const auto begin = index * options_.batch_size;
  const auto count = std::min(options_.batch_size, size() - begin);
  const auto shards = options_.shard.count, shard = options_.shard.index;
  const auto first = count * shard / shards, rows = count * (shard + 1) / shards - first;
  const auto& p = options_.pipeline;
  const int64_t sample = p.channels * p.size * p.size;
  auto images =
      torch::empty({rows, p.channels, p.size, p.size},
                   torch::TensorOptions(torch::kFloat32).pinned_memory(options_.pin_memory));
  float* out = images.data_ptr<float>();
  std::vector<int64_t> labels;
  labels.reserve(static_cast<size_t>(rows));
  int64_t skipped = 0;
  for (int64_t row = 0; row < rows; ++row) {
    const int64_t position = first + row;  // within the global batch: the same on every rank
    const int64_t id = order[begin + position];
    auto random = sample_random(options_.seed, epoch, index, position);
    Image image;
    try {
      image = source_->load(id);
    } catch (const InputError&) {
      if (!options_.skip_bad_images) throw;
      ++skipped;
      continue;
    }
    transform_sample(image, p, random, out + static_cast<int64_t>(labels.size()) * sample);
    labels.push_back(source_->label(id));
  }
  const auto kept = static_cast<int64_t>(labels.size());
  if (kept < rows) images = images.narrow(0, 0, kept);
  Batch batch;
  batch.skipped = skipped;
  batch.inputs = images;
  if (options_.mixing.enabled() && kept > 0) {
    auto random = sample_random(options_.seed, epoch, index, -1);
    std::vector<float> soft;
    mix_batch(out, kept, p.channels, p.size, p.size, labels.data(), options_.classes,
              options_.mixing, random, soft);
    batch.targets =
        torch::from_blob(soft.data(), {kept, options_.classes}, torch::kFloat32).clone();
  } else {
    batch.targets = torch::tensor(labels, torch::kInt64);
  }
  return batch;
}

void ImageLoader::stop_workers() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    cancel_ = true;
  }
  changed_.notify_all();
  for (auto& worker : workers_) worker.join();
  workers_.clear();
  ready_.clear();
  failed_.clear();
  cancel_ = false;
  next_to_claim_ = next_to_return_ = total_ = 0;
}

void ImageLoader::work(const std::vector<int64_t>& order, int64_t epoch, int64_t total) {
  // The workers share the cores with the training thread's OpenMP team: one team is enough.
  const SerialTorchOpsGuard serial;
  for (;;) {
    int64_t index = 0;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      // Claims the next batch unless `prefetch` finished ones already wait for the consumer.
      changed_.wait(lock, [&] {
        return cancel_ || next_to_claim_ >= total ||
               static_cast<int64_t>(ready_.size()) < options_.prefetch;
      });
      if (cancel_ || next_to_claim_ >= total) return;
      index = next_to_claim_++;
    }
    try {
      auto batch = assemble(order, epoch, index);
      std::lock_guard<std::mutex> lock(mutex_);
      ready_.emplace(index, std::move(batch));
    } catch (...) {
      std::lock_guard<std::mutex> lock(mutex_);
      failed_.emplace(index, std::current_exception());
    }
    changed_.notify_all();
  }
}

void ImageLoader::start_epoch(int64_t epoch, int64_t skip_batches) {
  TORCH_CHECK(skip_batches >= 0, "start_epoch: skip_batches must be non-negative, got ",
              skip_batches);
  stop_workers();
  order_ = epoch_order(epoch);
  total_ = batches_per_epoch();
  next_to_claim_ = next_to_return_ = std::min(skip_batches, total_);
  for (int64_t w = 0; w < options_.workers; ++w) {
    workers_.emplace_back([this, epoch] { work(order_, epoch, total_); });
  }
}

std::optional<Batch> ImageLoader::next() {
  std::unique_lock<std::mutex> lock(mutex_);
  if (next_to_return_ >= total_) return std::nullopt;
  const int64_t index = next_to_return_;
  changed_.wait(lock, [&] { return ready_.count(index) > 0 || failed_.count(index) > 0; });
  const auto failure = failed_.find(index);
  if (failure != failed_.end()) {
    const auto error = failure->second;
    // The epoch ends at its failure: the caller gets the error once, then nothing.
    next_to_return_ = total_;
    std::rethrow_exception(error);
  }
  auto batch = std::move(ready_.at(index));
  ready_.erase(index);
  ++next_to_return_;
  changed_.notify_all();
  return batch;
}

}  // namespace exfusion
