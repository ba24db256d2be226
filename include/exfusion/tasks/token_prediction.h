// The half the language tasks share: outputs are logits [B, L, vocab] over target token ids
// [B, L]; the loss and its evaluation sum are per target token, the metrics token accuracy and
// perplexity (the headline). Span corruption and causal language modelling derive from it and
// add their data.
#pragma once
#include "exfusion/tasks/task.h"

namespace exfusion {

class TokenPredictionTask : public Task {
 public:
  explicit TokenPredictionTask(TaskOptions options) : options_(options) {}
  torch::Tensor loss(const torch::Tensor& outputs, const Batch& batch) const override;
  torch::Tensor eval_loss_sum(const torch::Tensor& outputs, const Batch& batch) const override;
  const TaskMetrics& metrics() const override;
  torch::Tensor metric_sums(const torch::Tensor& outputs, const Batch& batch) const override;
  void derive(MetricValues& values) const override;

 protected:
  TaskOptions options_;
};

}  // namespace exfusion
