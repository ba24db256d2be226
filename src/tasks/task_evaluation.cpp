// A task's forward and its evaluation loop, written once for every task: each batch through
// Task::forward, its loss and metric sums added up on the device, one host read at the end.
#include <torch/torch.h>

#include <vector>

#include "exfusion/tasks/task.h"
#include "exfusion/util/device.h"

namespace exfusion {

torch::Tensor Task::forward(ModelImpl& model, const Batch& batch) const {
  return model.forward(batch.inputs);
}

EvalResult Task::evaluate(ModelImpl& model, BatchSource& source, const torch::Device& device,
                          bool bf16, bool keep_outputs) const {
  const bool was_training = model.is_training();
  model.eval();
  torch::NoGradGuard no_grad;
  const auto f64 = torch::TensorOptions(device).dtype(torch::kFloat64);
  auto loss_sum = torch::zeros({}, f64);
  auto metric_totals = torch::zeros({static_cast<int64_t>(metrics().summed().size())}, f64);
  std::vector<torch::Tensor> kept;
  MetricSums sums;
  source.start_epoch(0);
  while (auto batch = source.next()) {
    const auto on_device = batch->to(device);
    torch::Tensor outputs;
    {
      AutocastGuard autocast(bf16);
      outputs = forward(model, on_device).to(torch::kFloat32);
    }
    loss_sum += eval_loss_sum(outputs, on_device).to(torch::kFloat64);
    metric_totals += metric_sums(outputs, on_device);
    if (keep_outputs) kept.push_back(outputs.to(torch::kCPU));
    sums.samples += batch->size();
    sums.tokens += batch->tokens;
  }
  model.train(was_training);
  sums.loss = loss_sum.item<double>();
  const auto totals = metric_totals.cpu();
  sums.metrics.assign(totals.data_ptr<double>(), totals.data_ptr<double>() + totals.numel());
  auto result = averages(std::move(sums));
  if (keep_outputs && !kept.empty()) result.outputs = torch::cat(kept);
  return result;
}

}  // namespace exfusion
