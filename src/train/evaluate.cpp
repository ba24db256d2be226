// Test-set evaluation (see evaluate.h).
#include "exfusion/train/evaluate.h"

#include "exfusion/train/device.h"

namespace exfusion {

EvalResult evaluate(VisionTransformer& model, BatchLoader& loader, const torch::Device& device,
                    bool bf16, bool keep_logits) {
  const bool was_training = model->is_training();
  model->eval();
  torch::NoGradGuard no_grad;
  auto correct = torch::zeros({}, torch::TensorOptions(device).dtype(torch::kInt64));
  auto loss_sum = torch::zeros({}, torch::TensorOptions(device).dtype(torch::kFloat64));
  std::vector<torch::Tensor> kept;
  int64_t samples = 0;
  loader.start_epoch(0);
  while (auto batch = loader.next()) {
    const auto images = batch->images.to(device, /*non_blocking=*/true);
    const auto labels = batch->labels.to(device, /*non_blocking=*/true);
    torch::Tensor logits;
    {
      AutocastGuard autocast(bf16);
      logits = model->forward(images).to(torch::kFloat32);
    }
    correct += logits.argmax(-1).eq(labels).sum();
    loss_sum += at::cross_entropy_loss(logits, labels, {}, at::Reduction::Sum).to(torch::kFloat64);
    if (keep_logits) kept.push_back(logits.to(torch::kCPU));
    samples += labels.size(0);
  }
  model->train(was_training);
  EvalResult result;
  result.samples = samples;
  if (samples > 0) {
    result.accuracy = static_cast<double>(correct.item<int64_t>()) / static_cast<double>(samples);
    result.loss = loss_sum.item<double>() / static_cast<double>(samples);
  }
  if (keep_logits && !kept.empty()) result.logits = torch::cat(kept);
  return result;
}

}  // namespace exfusion
