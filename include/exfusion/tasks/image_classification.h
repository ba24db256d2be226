// Image classification on IDX files (Fashion-MNIST by default), CIFAR or an image-folder tree:
// label-smoothed (or Mixup's soft-target) cross-entropy, accuracy, and evaluation with the
// logits kept for comparing a fused model with its source.
#pragma once
#include "exfusion/data/image_data_config.h"
#include "exfusion/tasks/task.h"

namespace exfusion {

class ImageClassificationTask : public Task {
 public:
  explicit ImageClassificationTask(TaskOptions options) : options_(options) {}
  TaskData load_data(DataSection& data, const ModelOptions& model, bool with_train) const override;
  // The directory replaces the explicit IDX files too.
  nlohmann::json data_dir_patch(const std::string& dir) const override;
  torch::Tensor loss(const torch::Tensor& outputs, const Batch& batch) const override;
  torch::Tensor eval_loss_sum(const torch::Tensor& outputs, const Batch& batch) const override;
  const TaskMetrics& metrics() const override;  // accuracy, per image
  torch::Tensor metric_sums(const torch::Tensor& outputs, const Batch& batch) const override;
  // Normal images of the model's input shape, uniform labels.
  Batch synthetic_batch(const ModelOptions& model, int64_t batch_size) const override;

 private:
  // Opens the files (load_data's work); measures a missing normalisation into `config`.
  TaskData open_images(ImageDataConfig& config, const ModelOptions& model, bool with_train) const;

  TaskOptions options_;
};

}  // namespace exfusion
