// Gradient averaging across ranks on c10d's Reducer: the buckets, autograd hooks and overlap of
// communication with the backward pass of PyTorch's DistributedDataParallel. Beside it what DDP
// cannot know of: an expert bank's factored gradient dW̄ (one all-reduce per bank, never N expert
// gradients) and the global batch statistics of ExFusion-mb and the MoE (util/global_batch.h).
#pragma once
#include <torch/nn/module.h>
#include <torch/types.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "exfusion/dist/process_group.h"
#include "exfusion/fusion/expert_mix.h"
#include "exfusion/util/global_batch.h"

namespace c10d {
class Reducer;
}

namespace exfusion {

struct DataParallelOptions {
  double bucket_mb = 25.0;  // DDP's bucket_cap_mb (its first bucket is 1 MB, as DDP's)
};

class DataParallel {
 public:
  // Averages the gradients of `model`'s trainable parameters. Those in `factored` (name → the
  // sink its gradient may reach the optimizer through, as dW̄) are averaged after the backward
  // pass: the sink's dW̄ when the step filled it, else the ordinary gradient (a bank that a
  // mixture of experts reads directly). Checks that every rank holds parameters of the same
  // shapes (c10d's check, as DDP's).
  DataParallel(std::shared_ptr<DistributedGroup> group, torch::nn::Module& model,
               const std::map<std::string, std::shared_ptr<FactoredGradient>>& factored,
               DataParallelOptions options);
  ~DataParallel();
  DataParallel(const DataParallel&) = delete;
  DataParallel& operator=(const DataParallel&) = delete;

  // Before the forward pass of a training step; then before its backward, and after it (which
  // averages the factored gradients: the Reducer has averaged the rest by then).
  void before_forward();
  void before_backward();
  void after_backward();

  // The reducer global_batch_mean uses inside a GlobalBatchScope.
  const std::shared_ptr<CrossRankMean>& batch_mean() const { return batch_mean_; }
  DistributedGroup& group() const { return *group_; }

  // The bytes the last step's gradient all-reduces moved per rank (bucketed + factored).
  int64_t gradient_bytes() const;
  // Measures the all-reduce of gradient_bytes() alone: its mean wall time in ms over
  // `repeats` runs after one warm-up, what a step would pay with no overlap at all.
  double time_gradient_allreduce(int repeats) const;

 private:
  std::shared_ptr<DistributedGroup> group_;
  std::vector<torch::Tensor> params_;  // the Reducer's
  std::unique_ptr<c10d::Reducer> reducer_;
  // The parameters outside the Reducer, each with its sink.
  std::vector<std::pair<torch::Tensor, std::shared_ptr<FactoredGradient>>> factored_;
  std::shared_ptr<CrossRankMean> batch_mean_;
  int64_t factored_bytes_ = 0;  // the last step's
};

}  // namespace exfusion
