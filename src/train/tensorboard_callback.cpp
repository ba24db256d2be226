// TensorBoard scalars of a run (see tensorboard_callback.h): metrics.jsonl's values, each under
// its JSON path, through TensorBoardWriter (io/tensorboard_events.h).
#include "exfusion/train/tensorboard_callback.h"

#include <unistd.h>

#include <algorithm>
#include <array>
#include <ctime>
#include <stdexcept>

#include "exfusion/layers/capabilities.h"
#include "exfusion/train/trainer.h"
#include "exfusion/util/error.h"

namespace exfusion {
namespace {

constexpr const char* kEventFilePrefix = "events.out.tfevents.";

std::string host_name() {
  std::array<char, 256> name{};
  if (::gethostname(name.data(), name.size() - 1) != 0 || name[0] == '\0') return "localhost";
  std::string host(name.data());
  std::replace(host.begin(), host.end(), '/', '_');
  return host;
}

// Every number in `value` under `tag`, objects' keys and arrays' indices joined by '/'.
void add_flattened(TensorBoardWriter& writer, const std::string& tag, const nlohmann::json& value,
                   int64_t step, double wall_time) {
  if (value.is_number()) {
    writer.add_scalar(tag, value.get<double>(), step, wall_time);
  } else if (value.is_object()) {
    for (const auto& [key, item] : value.items()) {
      add_flattened(writer, tag + "/" + key, item, step, wall_time);
    }
  } else if (value.is_array()) {
    for (size_t i = 0; i < value.size(); ++i) {
      add_flattened(writer, tag + "/" + std::to_string(i), value[i], step, wall_time);
    }
  }
}

}  // namespace

TensorBoardCallback::TensorBoardCallback(std::filesystem::path dir) : dir_(std::move(dir)) {}

TensorBoardWriter& TensorBoardCallback::writer() {
  if (!writer_) {
    std::filesystem::create_directories(dir_);
    writer_ = std::make_unique<TensorBoardWriter>(
        dir_ / tensorboard::event_file_name(std::time(nullptr), host_name()));
  }
  return *writer_;
}

void TensorBoardCallback::on_train_begin(const Trainer& /*trainer*/, const TrainBegin& /*begin*/) {
  writer();
}

void TensorBoardCallback::on_step(const Trainer& trainer, const StepEvent& event) {
  if (event.window == nullptr) return;
  const auto& window = *event.window;
  auto& out = writer();
  const double now = tensorboard::wall_time_now();
  const auto& declared = trainer.task().metrics();
  for (const auto& [name, value] : window.metrics.items()) {
    out.add_scalar("train/" + name, value, event.step, now);
  }
  out.add_scalar("train/lr", event.lr, event.step, now);
  out.add_scalar("train/" + declared.sample_unit + "_per_s", window.samples_per_s, event.step, now);
  if (declared.counts_tokens()) {
    out.add_scalar("train/tokens_per_s", window.tokens_per_s, event.step, now);
  }
  const auto model_metrics = collect_metrics(*trainer.model());
  for (const auto& [group, values] : model_metrics.items()) {
    add_flattened(out, group, values, event.step, now);
  }
  out.flush();
}

void TensorBoardCallback::on_eval(const Trainer& /*trainer*/, const EvalEvent& event) {
  auto& out = writer();
  const double now = tensorboard::wall_time_now();
  for (const auto& [name, value] : event.result.metrics.items()) {
    out.add_scalar("eval/test_" + name, value, event.step, now);
  }
  out.flush();
}

void TensorBoardCallback::on_run_summary(int64_t step, const nlohmann::json& summary) {
  auto& out = writer();
  const double now = tensorboard::wall_time_now();
  for (const auto& [key, value] : summary.items()) {
    const bool evaluation = key.rfind("test_", 0) == 0 || key.rfind("fused_test_", 0) == 0;
    if (evaluation && value.is_number()) {
      out.add_scalar("summary/" + key, value.get<double>(), step, now);
    }
  }
  out.flush();
}

std::string TensorBoardCallback::output_name() const { return dir_.filename().string(); }

nlohmann::json TensorBoardCallback::output_position() const {
  if (!writer_) throw std::logic_error("TensorBoardCallback: no event file open before training");
  return {{"file", writer_->path().filename().string()}, {"bytes", writer_->size()}};
}

void TensorBoardCallback::rewind_output(const nlohmann::json& position) {
  const bool valid = position.is_object() && position.contains("file") &&
                     position["file"].is_string() && position.contains("bytes") &&
                     position["bytes"].is_number_unsigned();
  const auto name = valid ? position["file"].get<std::string>() : std::string();
  // A plain event file name, never a path out of the directory.
  if (!valid || name.rfind(kEventFilePrefix, 0) != 0 ||
      std::filesystem::path(name).filename().string() != name) {
    throw InputError(dir_.string() +
                     ": the checkpoint's position for it is not {\"file\": "
                     "\"events.out.tfevents...\", \"bytes\": n}");
  }
  const auto path = dir_ / name;
  if (!std::filesystem::exists(path)) {
    throw InputError(path.string() + ": missing, though the checkpoint recorded events in it");
  }
  writer_ = std::make_unique<TensorBoardWriter>(path);
  writer_->truncate(position["bytes"].get<int64_t>());
}

}  // namespace exfusion
