// Statistics over the global batch under data parallelism: a layer that averages over its
// batch (ExFusion-mb's router statistic w, the MoE's balance terms) asks global_batch_mean,
// which is the identity in one process and, inside a GlobalBatchScope, the mean over every
// rank, with the mean of the incoming gradients in the backward (SPEC §1).
#pragma once
#include <torch/types.h>

#include <memory>

namespace exfusion {

// The one collective this needs: the element-wise mean of `tensor` over every rank, in place,
// synchronously. Implemented over c10d by dist/data_parallel.h.
class CrossRankMean {
 public:
  virtual ~CrossRankMean() = default;
  virtual void mean_(torch::Tensor& tensor) = 0;
  // This process's rank and the number of ranks: where its samples lie in the global batch.
  virtual int64_t rank() const = 0;
  virtual int64_t ranks() const = 0;
};

// Makes `mean` current for this thread until destroyed (scopes nest, like c10::InferenceMode).
// The backward of a global_batch_mean runs with the reducer of its forward, on whichever
// thread autograd uses.
class GlobalBatchScope {
 public:
  explicit GlobalBatchScope(std::shared_ptr<CrossRankMean> mean);
  ~GlobalBatchScope();
  GlobalBatchScope(const GlobalBatchScope&) = delete;
  GlobalBatchScope& operator=(const GlobalBatchScope&) = delete;
  // The current reducer; null outside every scope.
  static const std::shared_ptr<CrossRankMean>& current();

 private:
  std::shared_ptr<CrossRankMean> previous_;
};

// `local_mean` (a mean over this rank's samples; every rank has the same number) as the mean
// over the global batch: itself outside a scope. Differentiable: its gradient is the mean of
// the ranks' gradients, so that K ranks step as one process with the global batch.
torch::Tensor global_batch_mean(const torch::Tensor& local_mean);

// Where this process's batch lies in the global batch: rank r of `ranks` holds the r-th of
// `ranks` equal slices. Rank 0 of 1 outside a scope.
struct GlobalBatchPlace {
  int64_t rank = 0;
  int64_t ranks = 1;
};
GlobalBatchPlace global_batch_place();

}  // namespace exfusion
