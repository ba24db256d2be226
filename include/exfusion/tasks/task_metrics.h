// What a task measures, declared once by the task: each metric's name, whether it is averaged
// over samples or over tokens (padding excluded), which way is better and which one leads the
// summaries. The trainer, evaluation, logs, summaries and sweep tables print what is declared.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

namespace exfusion {

enum class Averaging {
  kPerSample,  // summed over a batch's samples, divided by the samples
  kPerToken,   // summed over its tokens that are not padding (Batch::tokens), divided by them
  kDerived,    // computed from the other values (perplexity = exp(loss)) by Task::derive
};

struct MetricSpec {
  std::string name;  // the log's key: "accuracy" → test_accuracy, fused_test_accuracy
  Averaging averaging = Averaging::kPerSample;
  bool higher_is_better = true;
  bool fraction = false;  // a share in [0, 1], printed as a percentage
  std::string brief;      // its label on the progress bar ("acc"); empty: the name
};

// Values by name in the task's declaration order ("loss" first).
class MetricValues {
 public:
  void set(const std::string& name, double value);
  // Throws std::out_of_range naming the metric when it has no value.
  double at(const std::string& name) const;
  bool contains(const std::string& name) const;
  const std::vector<std::pair<std::string, double>>& items() const { return values_; }

 private:
  std::vector<std::pair<std::string, double>> values_;
};

struct TaskMetrics {
  Averaging loss_averaging = Averaging::kPerSample;  // how the task's loss is a mean
  std::vector<MetricSpec> metrics;                   // besides the loss
  std::string headline;                  // the metric summaries, tables and `compress` lead with
  std::string sample_unit = "samples";   // what a sample is, in logs: images_per_s
  std::string sample_brief = "samples";  // and on the progress bar: img/s
  // Whether a metric (or the loss) is per token: the trainer then counts tokens.
  bool counts_tokens() const;
  // The metrics the task sums over a batch (not derived), in declaration order.
  std::vector<const MetricSpec*> summed() const;
  // The spec named `name`; throws std::out_of_range for a name the task does not declare.
  const MetricSpec& at(const std::string& name) const;
};

// summary.json's "headline_metric": {"name", "higher_is_better", "fraction"}, which sweep
// tables read to rank a run whatever its task.
nlohmann::json headline_description(const TaskMetrics& metrics);

// A value as a person reads it: "88.10%" for a fraction, else "%.4f".
std::string metric_text(const MetricSpec& spec, double value);

}  // namespace exfusion
