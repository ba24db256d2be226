// The standard callbacks (see standard_callbacks.h).
#include "exfusion/train/standard_callbacks.h"

#include <cstdio>

#include "exfusion/layers/capabilities.h"
#include "exfusion/train/run_files.h"
#include "exfusion/train/trainer.h"
#include "exfusion/util/atomic_file.h"
#include "exfusion/util/error.h"
#include "exfusion/util/interrupt_guard.h"

namespace exfusion {

void JsonlMetricsCallback::on_step(const Trainer& trainer, const StepEvent& event) {
  if (event.window == nullptr) return;
  const auto& window = *event.window;
  const auto& declared = trainer.task().metrics();
  nlohmann::json record = {{"event", "train"},
                           {"step", event.step},
                           {"epoch", event.epoch},
                           {"lr", event.lr},
                           {declared.sample_unit + "_per_s", window.samples_per_s},
                           {"elapsed_s", window.elapsed_s}};
  for (const auto& [name, value] : window.metrics.items()) record[name] = value;
  if (declared.counts_tokens()) record["tokens_per_s"] = window.tokens_per_s;
  if (window.skipped_samples >= 0) {
    record["skipped_" + declared.sample_unit] = window.skipped_samples;
  }
  const auto model_metrics = collect_metrics(*trainer.model());
  for (const auto& [group, values] : model_metrics.items()) {
    record[group] = values;
  }
  log_.write(record);
}

void JsonlMetricsCallback::on_eval(const Trainer& trainer, const EvalEvent& event) {
  nlohmann::json record = {{"event", "eval"}, {"step", event.step}, {"epoch", event.epoch}};
  for (const auto& [name, value] : event.result.metrics.items()) record["test_" + name] = value;
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

void ProgressBarCallback::on_step(const Trainer& trainer, const StepEvent& event) {
  if (event.window == nullptr || !bar_) return;
  const auto& declared = trainer.task().metrics();
  const auto& headline = declared.at(declared.headline);
  char loss_text[32], metric_text[32];
  std::snprintf(loss_text, sizeof loss_text, "%.4f", event.window->loss);
  const double value = event.window->metrics.at(headline.name);
  if (headline.fraction) {
    std::snprintf(metric_text, sizeof metric_text, "%.1f%%", 100.0 * value);
  } else {
    std::snprintf(metric_text, sizeof metric_text, "%.3f", value);
  }
  const bool tokens = declared.counts_tokens();
  bar_->update(event.step,
               {{"epoch", std::to_string(event.epoch + 1) + "/" + std::to_string(epochs_)},
                {"loss", loss_text},
                {headline.brief.empty() ? headline.name : headline.brief, metric_text}},
               tokens ? event.window->tokens_per_s : event.window->samples_per_s,
               tokens ? "tok/s" : declared.sample_brief + "/s");
}

void ProgressBarCallback::on_train_end(const Trainer& /*trainer*/, const TrainResult& /*result*/) {
  if (bar_) bar_->finish();
}

std::string JsonlMetricsCallback::output_name() const { return log_.path().filename().string(); }

nlohmann::json JsonlMetricsCallback::output_position() const { return {{"bytes", log_.size()}}; }

void JsonlMetricsCallback::rewind_output(const nlohmann::json& position) {
  if (!position.is_object() || !position.contains("bytes") ||
      !position["bytes"].is_number_unsigned()) {
    throw InputError(log_.path().string() +
                     ": the checkpoint's position for it is not {\"bytes\": n}");
  }
  log_.truncate(position["bytes"].get<int64_t>());
}

CheckpointCallback::CheckpointCallback(RunConfig config, std::filesystem::path dir, int64_t every,
                                       int64_t keep, std::vector<const ResumableOutput*> outputs)
    : config_(std::move(config)),
      dir_(std::move(dir)),
      every_(every),
      keep_(keep),
      outputs_(std::move(outputs)) {}

void CheckpointCallback::save(const Trainer& trainer) {
  auto state = trainer.state(config_);
  for (const auto* output : outputs_) {
    state.outputs[output->output_name()] = output->output_position();
  }
  std::filesystem::create_directories(dir_);
  last_written_ = checkpoint_file(dir_, state.step);
  state.save(last_written_);
  current_ = true;
  const auto kept = list_checkpoints(dir_);
  for (size_t i = static_cast<size_t>(keep_); i < kept.size(); ++i) {
    std::filesystem::remove(kept[i].path);
  }
  sync_directory(dir_);
}

void CheckpointCallback::on_train_begin(const Trainer& /*trainer*/, const TrainBegin& begin) {
  // A resumed run starts from its newest checkpoint, which holds this very state.
  current_ = begin.first_step > 0;
}

void CheckpointCallback::on_step(const Trainer& trainer, const StepEvent& event) {
  current_ = false;
  // At an epoch's last step the epoch-end checkpoint follows right after its evaluation.
  if (every_ > 0 && event.step % every_ == 0 && !event.ends_epoch) save(trainer);
}

void CheckpointCallback::on_epoch_end(const Trainer& trainer, int64_t /*epoch*/) { save(trainer); }

void CheckpointCallback::on_train_end(const Trainer& trainer, const TrainResult& /*result*/) {
  if (!current_) save(trainer);
}

bool InterruptCallback::wants_stop() const { return InterruptGuard::pending() != 0; }

}  // namespace exfusion
