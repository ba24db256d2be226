// What the trainer and evaluation read, whatever the task: batches of inputs and targets from a
// source whose order is a pure function of (seed, epoch, batch), so a run can resume mid-epoch.
#pragma once
#include <torch/types.h>

#include <cstdint>
#include <optional>

namespace exfusion {

// One rank's part of the data under data parallelism: each global batch (count × the per-rank
// batch, in the order one process would read it) is cut into `count` consecutive parts and
// rank `index` reads part `index`, so K ranks see exactly the samples of one process.
struct DataShard {
  int64_t index = 0;
  int64_t count = 1;
};

struct Batch {
  torch::Tensor inputs;   // e.g. float32 [B, C, H, W] images, normalised; int64 [B, L] token ids
  torch::Tensor targets;  // e.g. int64 [B] labels, or float32 [B, classes] soft targets
  // An encoder-decoder's second sequence (the targets shifted right, as the decoder reads them);
  // undefined for a model of one input.
  torch::Tensor decoder_inputs{};
  int64_t skipped = 0;  // bad samples the source left out of this batch (when it may skip)
  // The target positions that are not padding, which per-token metrics divide by; counted by
  // the source on the host (no device read), 0 where the task has no tokens.
  int64_t tokens = 0;
  int64_t size() const { return targets.size(0); }
  // The batch with its tensors on `device` (copies that do not wait where the memory is pinned).
  Batch to(const torch::Device& device) const;
};

class BatchSource {
 public:
  virtual ~BatchSource() = default;
  virtual int64_t batches_per_epoch() const = 0;
  virtual int64_t size() const = 0;  // samples
  // Starts epoch `epoch` at its batch `skip_batches`, cancelling any epoch in progress.
  virtual void start_epoch(int64_t epoch, int64_t skip_batches = 0) = 0;
  // The next batch of the current epoch; nullopt at its end.
  virtual std::optional<Batch> next() = 0;
  // Whether batches may come with skipped samples (bad files the data section lets it skip):
  // only then does the trainer count them across ranks, which costs a copy per step.
  virtual bool may_skip() const { return false; }
};

}  // namespace exfusion
