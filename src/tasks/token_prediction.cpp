// Loss and metrics of the language tasks (see token_prediction.h).
#include "exfusion/tasks/token_prediction.h"

#include <ATen/ATen.h>

#include <cmath>

#include "exfusion/layers/cross_entropy.h"

namespace exfusion {

torch::Tensor TokenPredictionTask::loss(const torch::Tensor& outputs, const Batch& batch) const {
  return token_cross_entropy(outputs.to(torch::kFloat32).flatten(0, 1), batch.targets.flatten(),
                             -100, options_.label_smoothing);
}

torch::Tensor TokenPredictionTask::eval_loss_sum(const torch::Tensor& outputs,
                                                 const Batch& batch) const {
  return at::cross_entropy_loss(outputs.flatten(0, 1), batch.targets.flatten(), {},
                                at::Reduction::Sum);
}

const TaskMetrics& TokenPredictionTask::metrics() const {
  static const TaskMetrics declared{
      Averaging::kPerToken,
      {{"token_accuracy", Averaging::kPerToken, true, true, "tok acc"},
       {"perplexity", Averaging::kDerived, false, false, "ppl"}},
      "perplexity",
      "samples",
      "smp"};
  return declared;
}

torch::Tensor TokenPredictionTask::metric_sums(const torch::Tensor& outputs,
                                               const Batch& batch) const {
  return outputs.detach().argmax(-1).eq(batch.targets).sum().to(torch::kFloat64).reshape({1});
}

void TokenPredictionTask::derive(MetricValues& values) const {
  values.set("perplexity", std::exp(values.at("loss")));
}

}  // namespace exfusion
