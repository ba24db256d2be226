// What the trainer and the pipeline need of a task: its data, its training loss, the metrics it
// declares (tasks/task_metrics.h) with their per-batch sums, and its evaluation. Image
// classification is one registered task (tasks/image_classification.h); another (language
// modelling) adds its files and one line in src/tasks/task.cpp, not edits to the trainer.
#pragma once
#include <torch/types.h>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "exfusion/config/kind_registry.h"
#include "exfusion/data/batch.h"
#include "exfusion/io/safetensors.h"
#include "exfusion/models/model.h"
#include "exfusion/tasks/task_data.h"
#include "exfusion/tasks/task_metrics.h"

namespace exfusion {

// What a task takes from the run's training settings.
struct TaskOptions {
  double label_smoothing = 0.0;
  int64_t batch_size = 128;  // per rank
  int64_t seed = 0;          // data order and augmentation
  DataShard shard;           // this rank's part of every global batch
  bool pin_memory = false;   // batches in page-locked memory (training on CUDA)
};

// What a pass over data adds up: from these, the averages of any number of passes (the ranks'
// shards under data parallelism) follow.
struct MetricSums {
  double loss = 0.0;            // the loss summed over samples or tokens (loss_averaging)
  std::vector<double> metrics;  // each of TaskMetrics::summed() summed likewise
  int64_t samples = 0;
  int64_t tokens = 0;  // not padding; 0 where the task counts none
};

struct EvalResult {
  MetricSums sums;
  double loss = 0.0;
  MetricValues metrics;   // every declared metric, the derived ones included
  torch::Tensor outputs;  // [samples, ...] float32 on the CPU, in source order, when kept
  int64_t samples() const { return sums.samples; }
};

struct TaskData {
  std::unique_ptr<BatchSource> train;  // null when only evaluation was asked for
  std::unique_ptr<BatchSource> test;
  torch::Tensor test_targets;  // the test set's targets, in source order
  // The test set's model inputs in source order, where the task holds them whole (the text
  // tasks' fixed validation samples): `eval --save-logits` saves them beside the logits, so the
  // logits can be checked against another reader of the model.
  NamedTensors test_inputs;
  std::vector<std::string> class_names;  // label i's name, where the data names its classes
  // What was opened, for `exfusion data`: {"format", "mean", ...} as the task tells it.
  nlohmann::json description = nlohmann::json::object();
  int64_t workers = 1;  // threads preparing the training batches
};

class Task {
 public:
  virtual ~Task() = default;
  // Opens the data `data` names (this task's section, checked against `model`); measures what
  // the section leaves to the data (image normalisation) and writes it back into `data`.
  virtual TaskData load_data(DataSection& data, const ModelOptions& model,
                             bool with_train) const = 0;
  // The `data` keys that point the section at the data in `dir` (`exfusion eval --data-dir`).
  virtual nlohmann::json data_dir_patch(const std::string& dir) const { return {{"dir", dir}}; }
  // The model's outputs for `batch` (on the model's device): its one input by default; a task
  // of two sequences feeds an EncoderDecoder both (models/model.h).
  virtual torch::Tensor forward(ModelImpl& model, const Batch& batch) const;
  // The training loss of `outputs` for `batch` (the model's own auxiliary losses come on top).
  virtual torch::Tensor loss(const torch::Tensor& outputs, const Batch& batch) const = 0;
  // The evaluation loss summed over the batch's samples or tokens (as metrics().loss_averaging
  // says; no label smoothing): a device scalar, which evaluate() adds up without a host sync.
  virtual torch::Tensor eval_loss_sum(const torch::Tensor& outputs, const Batch& batch) const = 0;
  // What the task measures besides its loss; the same object for the task's lifetime.
  virtual const TaskMetrics& metrics() const = 0;
  // A float64 device vector: each of metrics().summed() summed over `batch` (over its samples
  // or its tokens), e.g. the correct predictions for accuracy. No host synchronisation.
  virtual torch::Tensor metric_sums(const torch::Tensor& outputs, const Batch& batch) const = 0;
  // Adds the derived metrics (Averaging::kDerived) to `values`, which hold "loss" and the
  // summed ones.
  virtual void derive(MetricValues& /*values*/) const {}
  // A batch of `batch_size` random samples in the form this task feeds `model` (images, token
  // ids, ...), with targets: what `exfusion bench` times steps on.
  virtual Batch synthetic_batch(const ModelOptions& model, int64_t batch_size) const = 0;
  // The target tokens one sample of `model`'s has (what per-token metrics and FLOPs per token
  // divide by); 0 for a task without tokens.
  virtual double tokens_per_sample(const ModelOptions& /*model*/) const { return 0; }

  // The model in eval mode over `source` (forward, eval_loss_sum and metric_sums per batch);
  // `keep_outputs` keeps the float32 outputs, which evaluation compares.
  EvalResult evaluate(ModelImpl& model, BatchSource& source, const torch::Device& device, bool bf16,
                      bool keep_outputs) const;

  // The averages of `sums` (each divided by its samples or tokens) and the derived metrics.
  EvalResult averages(MetricSums sums) const;
  // The values of a training window: `loss` as it is, `sums` divided by `samples` or `tokens`.
  MetricValues window_values(double loss, const std::vector<double>& sums, int64_t samples,
                             int64_t tokens) const;
  // "loss", the summed metrics' `means` (in TaskMetrics::summed() order) and the derived ones.
  MetricValues values_of(double loss, const std::vector<double>& means) const;
};

using TaskFactory = std::function<std::unique_ptr<Task>(const TaskOptions&)>;

// The tasks a config's `task` may name, each with its help and its data section's options;
// image_classification is registered in src/tasks/task.cpp, a test's own task in the test.
class TaskRegistry {
 public:
  template <class DataOptions>
  void add(const std::string& name, const std::string& help, TaskFactory factory,
           DataOptions data = {}) {
    kinds_.add_entry(
        {name, help, std::make_shared<DeclaredDataOptions<DataOptions>>(std::move(data))});
    factories_[name] = std::move(factory);
  }
  std::unique_ptr<Task> make(const std::string& name, const TaskOptions& options) const;
  // The defaults of `name`'s data section; throws InputError naming the registered tasks.
  std::shared_ptr<const TaskDataOptions> data_defaults(const std::string& name) const;
  bool contains(const std::string& name) const { return kinds_.contains(name); }
  const std::vector<std::string>& names() const { return kinds_.names(); }

 private:
  config::KindRegistry<TaskDataOptions> kinds_;
  std::map<std::string, TaskFactory> factories_;
};
TaskRegistry& task_kinds();

}  // namespace exfusion
