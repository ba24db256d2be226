// The standard callbacks (see standard_callbacks.h).
#include "exfusion/train/standard_callbacks.h"

#include <cstdio>

#include "exfusion/layers/capabilities.h"
#include "exfusion/train/trainer.h"

namespace exfusion {

void JsonlMetricsCallback::on_step(const Trainer& trainer, const StepEvent& event) {
  if (event.window == nullptr) return;
  const auto& window = *event.window;
  nlohmann::json record = {{"event", "train"},
                           {"step", event.step},
                           {"epoch", event.epoch},
                           {"lr", event.lr},
                           {"loss", window.loss},
                           {trainer.task().metric_name(), window.metric},
                           {"images_per_s", window.samples_per_s},
                           {"elapsed_s", window.elapsed_s}};
  const auto model_metrics = collect_metrics(*trainer.model());
  for (const auto& [group, values] : model_metrics.items()) {
    record[group] = values;
  }
  log_.write(record);
}

void JsonlMetricsCallback::on_eval(const Trainer& trainer, const EvalEvent& event) {
  nlohmann::json record = {{"event", "eval"},
                           {"step", event.step},
                           {"epoch", event.epoch},
                           {"test_accuracy", event.result.accuracy},
                           {"test_loss", event.result.loss}};
  const auto model_metrics = collect_metrics(*trainer.model());
  for (const auto& [group, values] : model_metrics.items()) {
    record[group] = values;
  }
  log_.write(record);
}

void ProgressBarCallback::on_train_begin(const Trainer& /*trainer*/, const TrainBegin& begin) {
  bar_ = std::make_unique<ProgressBar>("train", begin.total_steps, out_, stderr_is_terminal());
  epochs_ = begin.epochs;
}

void ProgressBarCallback::on_step(const Trainer& /*trainer*/, const StepEvent& event) {
  if (event.window == nullptr || !bar_) return;
  char loss_text[32], metric_text[32];
  std::snprintf(loss_text, sizeof loss_text, "%.4f", event.window->loss);
  std::snprintf(metric_text, sizeof metric_text, "%.1f%%", 100.0 * event.window->metric);
  bar_->update(event.step,
               {{"epoch", std::to_string(event.epoch + 1) + "/" + std::to_string(epochs_)},
                {"loss", loss_text},
                {"acc", metric_text}},
               event.window->samples_per_s);
}

void ProgressBarCallback::on_train_end(const Trainer& /*trainer*/, const TrainResult& /*result*/) {
  if (bar_) bar_->finish();
}

void CheckpointCallback::on_epoch_end(const Trainer& trainer, int64_t /*epoch*/) {
  trainer.state().save(path_);
}

}  // namespace exfusion
