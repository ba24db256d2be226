// Image classification on IDX files (Fashion-MNIST by default): label-smoothed cross-entropy,
// accuracy, and evaluation with the logits kept for comparing a fused model with its source.
#pragma once
#include "exfusion/tasks/task.h"

namespace exfusion {

class ImageClassificationTask : public Task {
 public:
  explicit ImageClassificationTask(double label_smoothing) : label_smoothing_(label_smoothing) {}
  TaskData load_data(RunConfig& config, bool with_train) const override;
  torch::Tensor loss(const torch::Tensor& outputs, const Batch& batch) const override;
  torch::Tensor metric_count(const torch::Tensor& outputs, const Batch& batch) const override;
  std::string metric_name() const override { return "accuracy"; }
  EvalResult evaluate(ModelImpl& model, BatchSource& source, const torch::Device& device, bool bf16,
                      bool keep_outputs) const override;

 private:
  double label_smoothing_;
};

}  // namespace exfusion
