// Metric declarations and values (see task_metrics.h), and the averaging every task shares.
#include "exfusion/tasks/task_metrics.h"

#include <algorithm>
#include <cstdio>
#include <stdexcept>

#include "exfusion/tasks/task.h"

namespace exfusion {

void MetricValues::set(const std::string& name, double value) {
  for (auto& [key, existing] : values_) {
    if (key == name) {
      existing = value;
      return;
    }
  }
  values_.emplace_back(name, value);
}

double MetricValues::at(const std::string& name) const {
  for (const auto& [key, value] : values_) {
    if (key == name) return value;
  }
  throw std::out_of_range("no value of the metric '" + name + "'");
}

bool MetricValues::contains(const std::string& name) const {
  return std::any_of(values_.begin(), values_.end(),
                     [&](const auto& item) { return item.first == name; });
}

bool TaskMetrics::counts_tokens() const {
  return loss_averaging == Averaging::kPerToken ||
         std::any_of(metrics.begin(), metrics.end(),
                     [](const MetricSpec& spec) { return spec.averaging == Averaging::kPerToken; });
}

std::vector<const MetricSpec*> TaskMetrics::summed() const {
  std::vector<const MetricSpec*> out;
  for (const auto& spec : metrics) {
    if (spec.averaging != Averaging::kDerived) out.push_back(&spec);
  }
  return out;
}

const MetricSpec& TaskMetrics::at(const std::string& name) const {
  for (const auto& spec : metrics) {
    if (spec.name == name) return spec;
  }
  throw std::out_of_range("the task declares no metric '" + name + "'");
}

nlohmann::json headline_description(const TaskMetrics& metrics) {
  const auto& headline = metrics.at(metrics.headline);
  return {{"name", headline.name},
          {"higher_is_better", headline.higher_is_better},
          {"fraction", headline.fraction}};
}

std::string metric_text(const MetricSpec& spec, double value) {
  char text[48];
  if (spec.fraction) {
    std::snprintf(text, sizeof text, "%.2f%%", 100.0 * value);
  } else {
    std::snprintf(text, sizeof text, "%.4f", value);
  }
  return text;
}

namespace {

double mean_of(double sum, Averaging averaging, int64_t samples, int64_t tokens) {
  const auto count = averaging == Averaging::kPerToken ? tokens : samples;
  return count > 0 ? sum / static_cast<double>(count) : 0.0;
}

}  // namespace

MetricValues Task::values_of(double loss, const std::vector<double>& means) const {
  const auto summed = metrics().summed();
  if (means.size() != summed.size()) {
    throw std::logic_error("Task::values_of: " + std::to_string(means.size()) + " values for " +
                           std::to_string(summed.size()) + " summed metrics");
  }
  MetricValues values;
  values.set("loss", loss);
  for (size_t i = 0; i < summed.size(); ++i) values.set(summed[i]->name, means[i]);
  derive(values);
  return values;
}

MetricValues Task::window_values(double loss, const std::vector<double>& sums, int64_t samples,
                                 int64_t tokens) const {
  const auto summed = metrics().summed();
  if (sums.size() != summed.size()) {
    throw std::logic_error("Task::window_values: " + std::to_string(sums.size()) + " sums for " +
                           std::to_string(summed.size()) + " summed metrics");
  }
  std::vector<double> means;
  for (size_t i = 0; i < summed.size(); ++i) {
    means.push_back(mean_of(sums[i], summed[i]->averaging, samples, tokens));
  }
  return values_of(loss, means);
}

EvalResult Task::averages(MetricSums sums) const {
  EvalResult result;
  result.loss = mean_of(sums.loss, metrics().loss_averaging, sums.samples, sums.tokens);
  result.metrics = window_values(result.loss, sums.metrics, sums.samples, sums.tokens);
  result.sums = std::move(sums);
  return result;
}

}  // namespace exfusion
