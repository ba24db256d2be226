// Image classification (see image_classification.h): IDX data checked against the model's
// input, normalisation measured on the training set, cross-entropy and accuracy.
#include "exfusion/tasks/image_classification.h"

#include <sstream>

#include "exfusion/data/idx.h"
#include "exfusion/data/loader.h"
#include "exfusion/util/device.h"
#include "exfusion/util/error.h"

namespace exfusion {
namespace fs = std::filesystem;
namespace {

IdxPaths data_paths(const DataConfig& data) {
  if (!data.train_images.empty()) {
    return {data.train_images, data.train_labels, data.test_images, data.test_labels};
  }
  return idx_paths_in(data.dir);
}

void check_images_fit(const ImageDataset& dataset, const ModelOptions& model,
                      const fs::path& file) {
  const auto sizes = dataset.images.sizes();
  const auto shape = model.input_shape();
  if (sizes[1] != shape[0] || sizes[2] != shape[1] || sizes[3] != shape[2]) {
    std::ostringstream message;
    message << file.string() << ": images are " << sizes[1] << "×" << sizes[2] << "×" << sizes[3]
            << " (channels×height×width), the model expects " << shape[0] << "×" << shape[1] << "×"
            << shape[2] << " (model.in_chans, model.img_size)";
    throw InputError(message.str());
  }
  const auto max_label = dataset.labels.max().item<int64_t>();
  if (dataset.labels.min().item<int64_t>() < 0 || max_label >= model.num_outputs()) {
    throw InputError(file.string() + ": label " + std::to_string(max_label) +
                     " is outside model.num_classes = " + std::to_string(model.num_outputs()));
  }
}

LoaderOptions loader_options(const DataConfig& data, const TaskOptions& task, bool training) {
  LoaderOptions options;
  options.batch_size = task.batch_size * task.shard.count;
  options.shard = task.shard;
  options.shuffle = training;
  options.drop_last = training;
  options.seed = static_cast<uint64_t>(task.seed);
  options.augment = training && data.augment;
  options.crop_padding = data.crop_padding;
  options.horizontal_flip = data.horizontal_flip;
  options.mean.assign(data.mean.begin(), data.mean.end());
  options.std.assign(data.std.begin(), data.std.end());
  options.prefetch = data.prefetch;
  return options;
}

}  // namespace

TaskData ImageClassificationTask::load_data(DataConfig& config, const ModelOptions& model,
                                            bool with_train) const {
  const auto paths = data_paths(config);
  TaskData data;
  if (with_train) {
    auto train_set = load_idx_pair(paths.train_images, paths.train_labels);
    check_images_fit(train_set, model, paths.train_images);
    if (config.mean.empty() || config.std.empty()) {
      const auto [mean, std] = channel_mean_std(train_set.images);
      config.mean.assign(mean.begin(), mean.end());
      config.std.assign(std.begin(), std.end());
    }
    data.train =
        std::make_unique<BatchLoader>(std::move(train_set), loader_options(config, options_, true));
  } else if (config.mean.empty() || config.std.empty()) {
    throw InputError("its config has no data.mean/data.std normalisation");
  }
  auto test_set = load_idx_pair(paths.test_images, paths.test_labels);
  check_images_fit(test_set, model, paths.test_images);
  data.test_targets = test_set.labels;
  data.test =
      std::make_unique<BatchLoader>(std::move(test_set), loader_options(config, options_, false));
  return data;
}

torch::Tensor ImageClassificationTask::loss(const torch::Tensor& outputs,
                                            const Batch& batch) const {
  return at::cross_entropy_loss(outputs.to(torch::kFloat32), batch.targets, {}, at::Reduction::Mean,
                                -100, options_.label_smoothing);
}

torch::Tensor ImageClassificationTask::metric_count(const torch::Tensor& outputs,
                                                    const Batch& batch) const {
  return outputs.detach().argmax(-1).eq(batch.targets).sum();
}

EvalResult ImageClassificationTask::evaluate(ModelImpl& model, BatchSource& source,
                                             const torch::Device& device, bool bf16,
                                             bool keep_outputs) const {
  const bool was_training = model.is_training();
  model.eval();
  torch::NoGradGuard no_grad;
  auto correct = torch::zeros({}, torch::TensorOptions(device).dtype(torch::kInt64));
  auto loss_sum = torch::zeros({}, torch::TensorOptions(device).dtype(torch::kFloat64));
  std::vector<torch::Tensor> kept;
  int64_t samples = 0;
  source.start_epoch(0);
  while (auto batch = source.next()) {
    const auto images = batch->inputs.to(device, /*non_blocking=*/true);
    const auto labels = batch->targets.to(device, /*non_blocking=*/true);
    torch::Tensor logits;
    {
      AutocastGuard autocast(bf16);
      logits = model.forward(images).to(torch::kFloat32);
    }
    correct += logits.argmax(-1).eq(labels).sum();
    loss_sum += at::cross_entropy_loss(logits, labels, {}, at::Reduction::Sum).to(torch::kFloat64);
    if (keep_outputs) kept.push_back(logits.to(torch::kCPU));
    samples += labels.size(0);
  }
  model.train(was_training);
  EvalResult result;
  result.samples = samples;
  if (samples > 0) {
    result.accuracy = static_cast<double>(correct.item<int64_t>()) / static_cast<double>(samples);
    result.loss = loss_sum.item<double>() / static_cast<double>(samples);
  }
  if (keep_outputs && !kept.empty()) result.outputs = torch::cat(kept);
  return result;
}

}  // namespace exfusion
