// Saving and loading the whole training state (see training_state.h). The checksum covers the
// tensors' bytes in name order, so damage anywhere in the data (not only a truncation, which
// the safetensors reader catches) is found before a run resumes from it.
#include "exfusion/train/training_state.h"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>

#include "exfusion/train/run_files.h"
#include "exfusion/util/error.h"
#include "exfusion/util/json_input.h"
#include "exfusion/util/tensor_checksum.h"

namespace exfusion {
namespace {

constexpr const char* kModelPrefix = "model.";
constexpr const char* kOptimizerPrefix = "optimizer.";
constexpr const char* kStep = "trainer.step";
constexpr const char* kEpoch = "trainer.epoch";
constexpr const char* kBatch = "trainer.batch_in_epoch";
// i64 [steps, samples, tokens]; in format 3 [steps, samples, correct] (accuracy's count).
constexpr const char* kWindowCounts = "trainer.window_counts";
// Format 4: f64, one per summed metric, named in order by kMetricNamesKey.
constexpr const char* kWindowMetricSums = "trainer.window_metric_sums";
constexpr const char* kLastMetrics = "trainer.last_metrics";
constexpr const char* kMetricNamesKey = "exfusion.metric_names";
// Absent in checkpoints from before the image pipeline: nothing was skipped then.
constexpr const char* kSkipped = "trainer.skipped_samples";
// f64 [loss sum, last loss, train s, eval s]; in format 3 with the last metric after last loss.
constexpr const char* kTimes = "trainer.progress";
// i64 [taken, fell back] per fast path; absent in checkpoints from before the CPU attention
// kernel, whose runs counted no call on the CPU.
constexpr const char* kFastPathCalls = "trainer.fast_path_calls";
constexpr const char* kCpuRng = "rng.cpu";
constexpr const char* kCudaRng = "rng.cuda";
constexpr const char* kChecksumKey = "exfusion.checksum";
constexpr const char* kOutputsKey = "exfusion.outputs";
constexpr const char* kWorldSizeKey = "exfusion.world_size";
constexpr int64_t kMaxWorldSize = 1 << 16;

const torch::Tensor& tensor_named(const SafetensorsFile& file, const std::string& name,
                                  const std::filesystem::path& path) {
  const auto found = file.tensors.find(name);
  if (found == file.tensors.end()) {
    throw InputError(path.string() + ": training state without '" + name + "'");
  }
  return found->second;
}

const torch::Tensor& vector_of(const SafetensorsFile& file, const std::string& name,
                               torch::ScalarType type, int64_t size,
                               const std::filesystem::path& path) {
  const auto& tensor = tensor_named(file, name, path);
  if (tensor.scalar_type() != type || tensor.dim() != 1 || tensor.numel() != size) {
    throw InputError(path.string() + ": training state's '" + name + "' is not a " +
                     std::string(c10::toString(type)) + " vector of " + std::to_string(size));
  }
  return tensor;
}

int64_t scalar(const SafetensorsFile& file, const std::string& name,
               const std::filesystem::path& path) {
  const auto& tensor = tensor_named(file, name, path);
  if (tensor.numel() != 1 || tensor.dim() != 0 || tensor.scalar_type() != torch::kInt64) {
    throw InputError(path.string() + ": training state's '" + name + "' is not an int64 scalar");
  }
  return tensor.item<int64_t>();
}

// Format 4's metric names (metadata) and the window's sums and last means, one per name.
void read_metric_sums(const SafetensorsFile& file, const std::filesystem::path& path,
                      TrainProgress& progress) {
  const auto names = file.metadata.find(kMetricNamesKey);
  if (names == file.metadata.end()) {
    throw InputError(path.string() + ": format 4 training state without '" +
                     std::string(kMetricNamesKey) + "' metadata");
  }
  const auto parsed = parse_json_input(
      names->second, path.string() + ": metadata '" + std::string(kMetricNamesKey) + "'");
  const bool names_are_strings =
      parsed.is_array() &&
      std::all_of(parsed.begin(), parsed.end(), [](const auto& v) { return v.is_string(); });
  if (!names_are_strings) {
    throw InputError(path.string() + ": metadata '" + std::string(kMetricNamesKey) +
                     "' is not a JSON list of metric names");
  }
  progress.metric_names = parsed.get<std::vector<std::string>>();
  const auto count = static_cast<int64_t>(progress.metric_names.size());
  const auto values = [&](const char* name) {
    const auto tensor = vector_of(file, name, torch::kFloat64, count, path).contiguous();
    const auto* data = tensor.data_ptr<double>();
    return std::vector<double>(data, data + count);
  };
  progress.window_metric_sums = values(kWindowMetricSums);
  progress.last_metrics = values(kLastMetrics);
}

// CRC-32 of the tensors' bytes, in the order given (name order: the map's, or sorted).
template <class Named>
std::string checksum_of(const Named& tensors) {
  uint32_t crc = 0;
  for (const auto& [name, tensor] : tensors) crc = crc32_of(tensor, crc);
  char text[16];
  std::snprintf(text, sizeof text, "%08lx", static_cast<unsigned long>(crc));
  return text;
}

}  // namespace

void TrainingState::save(const std::filesystem::path& path) const {
  std::map<std::string, torch::Tensor> named;
  for (const auto& [name, tensor] : model) named.emplace(kModelPrefix + name, tensor);
  for (const auto& [name, tensor] : optimizer) named.emplace(kOptimizerPrefix + name, tensor);
  named.emplace(kStep, torch::tensor(step, torch::kInt64));
  named.emplace(kEpoch, torch::tensor(epoch, torch::kInt64));
  named.emplace(kBatch, torch::tensor(batch_in_epoch, torch::kInt64));
  named.emplace(kWindowCounts,
                torch::tensor(std::vector<int64_t>{progress.window_steps, progress.window_samples,
                                                   progress.window_tokens}));
  const auto metric_count = static_cast<int64_t>(progress.metric_names.size());
  const auto f64_vector = [&](const std::vector<double>& values, const char* name) {
    if (static_cast<int64_t>(values.size()) != metric_count) {
      throw std::logic_error(std::string("TrainingState::save: ") + name + " holds " +
                             std::to_string(values.size()) + " values for " +
                             std::to_string(metric_count) + " metrics");
    }
    return torch::tensor(values, torch::kFloat64).reshape({metric_count});
  };
  named.emplace(kWindowMetricSums, f64_vector(progress.window_metric_sums, kWindowMetricSums));
  named.emplace(kLastMetrics, f64_vector(progress.last_metrics, kLastMetrics));
  named.emplace(kTimes,
                torch::tensor(std::vector<double>{progress.window_loss_sum, progress.last_loss,
                                                  progress.train_seconds, progress.eval_seconds},
                              torch::kFloat64));
  named.emplace(kSkipped, torch::tensor(progress.skipped_samples, torch::kInt64));
  std::vector<int64_t> calls;
  for (const auto& path : fast_path_calls) {
    calls.insert(calls.end(), {path.taken, path.fell_back});
  }
  named.emplace(kFastPathCalls, torch::tensor(calls, torch::kInt64));
  if (cpu_rng.defined()) named.emplace(kCpuRng, cpu_rng);
  if (cuda_rng.defined()) named.emplace(kCudaRng, cuda_rng);
  NamedTensors tensors;
  for (const auto& [name, tensor] : named) tensors.emplace_back(name, tensor.to(torch::kCPU));
  save_safetensors(path, tensors,
                   {{kConfigMetadataKey, to_json(config).dump()},
                    {kKindMetadataKey, kTrainingStateKind},
                    {kFormatMetadataKey, std::to_string(kFormatVersion)},
                    {kOutputsKey, outputs.dump()},
                    {kMetricNamesKey, nlohmann::json(progress.metric_names).dump()},
                    {kWorldSizeKey, std::to_string(world_size)},
                    {kChecksumKey, checksum_of(tensors)}});
}

TrainingState TrainingState::load(const std::filesystem::path& path) {
  auto checkpoint = load_checkpoint(path);
  if (!checkpoint.is_training_state) {
    throw InputError(path.string() + ": not a training state (a dense model?)");
  }
  const auto& file = checkpoint.file;
  TrainingState state;
  state.format = checkpoint.format;
  state.config = checkpoint.config;
  if (state.format >= 3) {
    const auto checksum = file.metadata.find(kChecksumKey);
    if (checksum == file.metadata.end()) {
      throw InputError(path.string() + ": format 3 training state without '" +
                       std::string(kChecksumKey) + "' metadata");
    }
    if (checksum_of(file.tensors) != checksum->second) {
      throw InputError(path.string() +
                       ": damaged: its tensors do not match the checksum written with them");
    }
  }
  const std::string model_prefix = kModelPrefix, optimizer_prefix = kOptimizerPrefix;
  for (const auto& [name, tensor] : file.tensors) {
    if (name.rfind(model_prefix, 0) == 0) {
      state.model.emplace(name.substr(model_prefix.size()), tensor);
    } else if (name.rfind(optimizer_prefix, 0) == 0) {
      state.optimizer.emplace(name.substr(optimizer_prefix.size()), tensor);
    }
  }
  state.step = scalar(file, kStep, path);
  if (state.format >= 2) {
    state.epoch = scalar(file, kEpoch, path);
    state.batch_in_epoch = scalar(file, kBatch, path);
    // The generators' own byte states: the CPU's Mersenne twister has a fixed size, which
    // set_state would otherwise reject as an internal error (CUDA's checks its own on restore).
    const int64_t cpu_state_bytes = at::detail::getDefaultCPUGenerator().get_state().numel();
    state.cpu_rng = vector_of(file, kCpuRng, torch::kUInt8, cpu_state_bytes, path);
    const auto cuda = file.tensors.find(kCudaRng);
    if (cuda != file.tensors.end()) {
      state.cuda_rng = vector_of(file, kCudaRng, torch::kUInt8,
                                 std::max<int64_t>(cuda->second.numel(), 1), path);
    }
  }
  if (state.format >= 3) {
    const auto counts = vector_of(file, kWindowCounts, torch::kInt64, 3, path);
    state.progress.window_steps = counts[0].item<int64_t>();
    state.progress.window_samples = counts[1].item<int64_t>();
    if (state.format == 3) {
      // Image classification's one metric: the window's correct predictions.
      state.progress.metric_names = {"accuracy"};
      state.progress.window_metric_sums = {static_cast<double>(counts[2].item<int64_t>())};
    } else {
      state.progress.window_tokens = counts[2].item<int64_t>();
      read_metric_sums(file, path, state.progress);
    }
    if (file.tensors.count(kSkipped) != 0) {
      state.progress.skipped_samples = scalar(file, kSkipped, path);
    }
    if (file.tensors.count(kFastPathCalls) != 0) {
      // States written before a path existed hold fewer: the later paths start at zero.
      auto& paths = state.fast_path_calls;
      const auto& written = tensor_named(file, kFastPathCalls, path);
      const int64_t held = std::min<int64_t>(written.numel() / 2, paths.size());
      const auto calls = vector_of(file, kFastPathCalls, torch::kInt64, 2 * held, path);
      for (size_t i = 0; i < static_cast<size_t>(held); ++i) {
        paths[i] = {calls[2 * i].item<int64_t>(), calls[2 * i + 1].item<int64_t>()};
      }
    }
    const bool format3 = state.format == 3;
    const auto times = vector_of(file, kTimes, torch::kFloat64, format3 ? 5 : 4, path);
    const int64_t after = format3 ? 1 : 0;  // format 3's last metric sits before the times
    state.progress.window_loss_sum = times[0].item<double>();
    state.progress.last_loss = times[1].item<double>();
    if (format3) state.progress.last_metrics = {times[2].item<double>()};
    state.progress.train_seconds = times[2 + after].item<double>();
    state.progress.eval_seconds = times[3 + after].item<double>();
    const auto outputs = file.metadata.find(kOutputsKey);
    if (outputs != file.metadata.end()) {
      state.outputs = parse_json_input(
          outputs->second, path.string() + ": metadata '" + std::string(kOutputsKey) + "'");
      if (!state.outputs.is_object()) {
        throw InputError(path.string() + ": metadata '" + std::string(kOutputsKey) +
                         "' is not a JSON object");
      }
    }
  }
  const auto world = file.metadata.find(kWorldSizeKey);
  if (world != file.metadata.end()) {
    char* end = nullptr;
    const long long value = std::strtoll(world->second.c_str(), &end, 10);
    if (end == world->second.c_str() || *end != '\0' || value < 1 || value > kMaxWorldSize) {
      throw InputError(path.string() + ": metadata '" + std::string(kWorldSizeKey) + "' = '" +
                       world->second + "': expected a rank count in [1, " +
                       std::to_string(kMaxWorldSize) + "]");
    }
    state.world_size = value;
  }
  return state;
}

}  // namespace exfusion
