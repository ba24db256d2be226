// Image classification (see image_classification.h): IDX, CIFAR or image-folder data checked
// against the model's input, normalisation measured on the training set, the in-memory batch
// loader or the worker-pool image pipeline, cross-entropy (soft targets under Mixup) and accuracy.
#include "exfusion/tasks/image_classification.h"

#include <algorithm>
#include <cmath>
#include <sstream>

#include "exfusion/data/cifar.h"
#include "exfusion/data/idx.h"
#include "exfusion/data/image_folder.h"
#include "exfusion/data/image_loader.h"
#include "exfusion/data/loader.h"
#include "exfusion/util/error.h"

namespace exfusion {
namespace fs = std::filesystem;
namespace {

IdxPaths data_paths(const ImageDataConfig& data) {
  if (!data.train_images.empty()) {
    return {data.train_images, data.train_labels, data.test_images, data.test_labels};
  }
  return idx_paths_in(data.dir);
}

// The model's one input as {C, H, W}: what this task feeds; InputError for a model of other
// inputs (token ids, two sequences).
std::vector<int64_t> image_shape(const ModelOptions& model) {
  const auto shapes = model.input_shapes();
  if (shapes.size() != 1 || shapes.front().size() != 3) {
    throw InputError(
        "task image_classification feeds images (channels×height×width), and the "
        "model takes " +
        nlohmann::json(shapes).dump() + " per sample");
  }
  return shapes.front();
}

// `any_size`: the image pipeline resizes, so only the channels must match.
void check_images_fit(const ImageDataset& dataset, const ModelOptions& model, const fs::path& file,
                      bool any_size) {
  const auto sizes = dataset.images.sizes();
  const auto shape = image_shape(model);
  if (sizes[1] != shape[0] || (!any_size && (sizes[2] != shape[1] || sizes[3] != shape[2]))) {
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

LoaderOptions loader_options(const ImageDataConfig& data, const TaskOptions& task, bool training) {
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

ImagePipelineOptions pipeline_options(const ImageDataConfig& data, const ModelOptions& model,
                                      bool training) {
  const auto shape = image_shape(model);
  ImagePipelineOptions p;
  p.train = training && data.augment;
  p.channels = shape[0];
  p.size = shape[1];
  p.interpolation =
      data.interpolation == "bilinear" ? Interpolation::Bilinear : Interpolation::Bicubic;
  p.random_resized_crop = data.random_resized_crop;
  p.crop_scale[0] = data.crop_scale[0];
  p.crop_scale[1] = data.crop_scale[1];
  p.crop_ratio[0] = data.crop_ratio[0];
  p.crop_ratio[1] = data.crop_ratio[1];
  p.horizontal_flip = data.horizontal_flip;
  if (!data.rand_augment.empty()) {
    p.rand_augment = parse_rand_augment(data.rand_augment, "data.rand_augment");
  }
  p.random_erasing = data.random_erasing;
  p.eval_crop_ratio = data.eval_crop_ratio;
  p.mean.assign(data.mean.begin(), data.mean.end());
  p.std.assign(data.std.begin(), data.std.end());
  return p;
}

ImageLoaderOptions image_loader_options(const ImageDataConfig& data, const TaskOptions& task,
                                        const ModelOptions& model, bool training) {
  ImageLoaderOptions options;
  options.batch_size = task.batch_size * task.shard.count;
  options.shard = task.shard;
  options.shuffle = training;
  options.drop_last = training;
  options.seed = static_cast<uint64_t>(task.seed);
  options.workers = data.workers;
  options.prefetch = data.prefetch;
  const bool augment = training && data.augment;
  options.repeats = augment ? data.repeated_augmentation : 1;
  options.pipeline = pipeline_options(data, model, training);
  if (augment) {
    options.mixing.mixup_alpha = data.mixup;
    options.mixing.cutmix_alpha = data.cutmix;
    options.mixing.probability = data.mixup_prob;
    options.mixing.switch_probability = data.mixup_switch_prob;
    options.mixing.label_smoothing = task.label_smoothing;
  }
  options.classes = model.num_outputs();
  options.skip_bad_images = data.skip_bad_images;
  options.pin_memory = task.pin_memory;
  return options;
}

// Mean and standard deviation per channel of up to 500 evenly spaced training images after
// the evaluation transform (decoding a whole ImageNet for them would take hours).
std::pair<std::vector<double>, std::vector<double>> measured_mean_std(const ImageSource& source,
                                                                      const ImageDataConfig& data,
                                                                      const ModelOptions& model) {
  auto p = pipeline_options(data, model, /*training=*/false);
  p.mean.assign(static_cast<size_t>(p.channels), 0.0f);
  p.std.assign(static_cast<size_t>(p.channels), 1.0f);
  const int64_t n = source.size(), count = std::min<int64_t>(n, 500);
  const int64_t plane = p.size * p.size;
  std::vector<float> sample(static_cast<size_t>(p.channels * plane));
  std::vector<double> sum(p.channels, 0.0), squares(p.channels, 0.0);
  SampleRandom unused(0);
  for (int64_t i = 0; i < count; ++i) {
    transform_sample(source.load(i * n / count), p, unused, sample.data());
    for (int64_t c = 0; c < p.channels; ++c) {
      for (int64_t k = 0; k < plane; ++k) {
        const double v = sample[c * plane + k];
        sum[c] += v;
        squares[c] += v * v;
      }
    }
  }
  const double total = static_cast<double>(count * plane);
  std::vector<double> mean(p.channels), std(p.channels);
  for (int64_t c = 0; c < p.channels; ++c) {
    mean[c] = sum[c] / total;
    std[c] = std::sqrt(std::max(squares[c] / total - mean[c] * mean[c], 1e-12));
  }
  return {mean, std};
}

void check_classes_fit(const std::vector<std::string>& classes, const ModelOptions& model,
                       const fs::path& dir) {
  if (static_cast<int64_t>(classes.size()) > model.num_outputs()) {
    throw InputError(
        dir.string() + ": " + std::to_string(classes.size()) +
        " classes, more than model.num_classes = " + std::to_string(model.num_outputs()));
  }
}

// The training and test images of an in-memory format (IDX or CIFAR).
struct InMemorySplits {
  std::optional<ImageDataset> train;
  ImageDataset test;
  fs::path train_file, test_file;
  std::vector<std::string> class_names;
};

InMemorySplits load_in_memory(const ImageDataConfig& config, bool with_train) {
  InMemorySplits splits;
  if (config.format == "cifar") {
    const bool coarse = config.cifar_labels == "coarse";
    const auto files = cifar_files_in(config.dir, coarse);
    if (with_train) splits.train = load_cifar(files.train, files.variant, coarse);
    splits.test = load_cifar({files.test}, files.variant, coarse);
    splits.train_file = files.train.front();
    splits.test_file = files.test;
    splits.class_names = files.class_names;
    return splits;
  }
  const auto paths = data_paths(config);
  if (with_train) splits.train = load_idx_pair(paths.train_images, paths.train_labels);
  splits.test = load_idx_pair(paths.test_images, paths.test_labels);
  splits.train_file = paths.train_images;
  splits.test_file = paths.test_images;
  return splits;
}

}  // namespace

nlohmann::json ImageClassificationTask::data_dir_patch(const std::string& dir) const {
  return {{"dir", dir},
          {"train_images", ""},
          {"train_labels", ""},
          {"test_images", ""},
          {"test_labels", ""}};
}

TaskData ImageClassificationTask::load_data(DataSection& section, const ModelOptions& model,
                                            bool with_train) const {
  auto& config = section.edit<ImageDataConfig>();
  auto data = open_images(config, model, with_train);
  data.description = {{"format", config.format},
                      {"workers", config.workers},
                      {"mean", config.mean},
                      {"std", config.std}};
  data.workers = config.uses_image_pipeline() ? config.workers : 1;
  return data;
}

TaskData ImageClassificationTask::open_images(ImageDataConfig& config, const ModelOptions& model,
                                              bool with_train) const {
  const auto channels = image_shape(model)[0];
  if (config.uses_image_pipeline() && channels != 1 && channels != 3) {
    throw InputError("model.in_chans = " + std::to_string(channels) +
                     ": the image pipeline (data.format " + config.format +
                     " or its augmentations) feeds grey (1) or colour (3) images");
  }
  if (!with_train && (config.mean.empty() || config.std.empty())) {
    throw InputError("its config has no data.mean/data.std normalisation");
  }
  TaskData data;
  if (config.format == "folder") {
    const fs::path root = config.dir;
    auto train_listing = list_image_folder(root / "train");
    check_classes_fit(train_listing.classes, model, root / "train");
    data.class_names = train_listing.classes;
    auto test_listing = list_image_folder(root / "val", &data.class_names);
    if (with_train) {
      auto train = std::make_shared<FolderImageSource>(std::move(train_listing), channels);
      if (config.mean.empty() || config.std.empty()) {
        std::tie(config.mean, config.std) = measured_mean_std(*train, config, model);
      }
      data.train = std::make_unique<ImageLoader>(
          train, image_loader_options(config, options_, model, /*training=*/true));
    }
    data.test_targets = torch::tensor(test_listing.labels, torch::kInt64);
    data.test = std::make_unique<ImageLoader>(
        std::make_shared<FolderImageSource>(std::move(test_listing), channels),
        image_loader_options(config, options_, model, /*training=*/false));
    return data;
  }
  auto splits = load_in_memory(config, with_train);
  data.class_names = splits.class_names;
  const bool pipeline = config.uses_image_pipeline();
  if (splits.train) {
    check_images_fit(*splits.train, model, splits.train_file, /*any_size=*/pipeline);
    if (config.mean.empty() || config.std.empty()) {
      const auto [mean, std] = channel_mean_std(splits.train->images);
      config.mean.assign(mean.begin(), mean.end());
      config.std.assign(std.begin(), std.end());
    }
    if (pipeline) {
      data.train = std::make_unique<ImageLoader>(
          std::make_shared<TensorImageSource>(std::move(*splits.train)),
          image_loader_options(config, options_, model, /*training=*/true));
    } else {
      data.train = std::make_unique<BatchLoader>(std::move(*splits.train),
                                                 loader_options(config, options_, true));
    }
  }
  check_images_fit(splits.test, model, splits.test_file, /*any_size=*/pipeline);
  data.test_targets = splits.test.labels;
  if (pipeline) {
    data.test = std::make_unique<ImageLoader>(
        std::make_shared<TensorImageSource>(std::move(splits.test)),
        image_loader_options(config, options_, model, /*training=*/false));
  } else {
    data.test = std::make_unique<BatchLoader>(std::move(splits.test),
                                              loader_options(config, options_, false));
  }
  return data;
}

torch::Tensor ImageClassificationTask::loss(const torch::Tensor& outputs,
                                            const Batch& batch) const {
  if (batch.targets.dim() == 2) {
    // Mixup/CutMix's soft targets, which carry the label smoothing (timm's
    // SoftTargetCrossEntropy).
    return -(batch.targets * torch::log_softmax(outputs.to(torch::kFloat32), -1)).sum(-1).mean();
  }
  return at::cross_entropy_loss(outputs.to(torch::kFloat32), batch.targets, {}, at::Reduction::Mean,
                                -100, options_.label_smoothing);
}

torch::Tensor ImageClassificationTask::eval_loss_sum(const torch::Tensor& outputs,
                                                     const Batch& batch) const {
  return at::cross_entropy_loss(outputs, batch.targets, {}, at::Reduction::Sum);
}

const TaskMetrics& ImageClassificationTask::metrics() const {
  static const TaskMetrics declared{Averaging::kPerSample,
                                    {{"accuracy", Averaging::kPerSample, true, true, "acc"}},
                                    "accuracy",
                                    "images",
                                    "img"};
  return declared;
}

torch::Tensor ImageClassificationTask::metric_sums(const torch::Tensor& outputs,
                                                   const Batch& batch) const {
  // With soft targets, a prediction counts when it is their largest share.
  const auto labels = batch.targets.dim() == 2 ? batch.targets.argmax(-1) : batch.targets;
  return outputs.detach().argmax(-1).eq(labels).sum().to(torch::kFloat64).reshape({1});
}

Batch ImageClassificationTask::synthetic_batch(const ModelOptions& model,
                                               int64_t batch_size) const {
  std::vector<int64_t> shape{batch_size};
  for (const auto size : image_shape(model)) shape.push_back(size);
  return {torch::randn(shape), torch::randint(0, model.num_outputs(), {batch_size})};
}

}  // namespace exfusion
