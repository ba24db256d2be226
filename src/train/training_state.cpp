// Saving and loading the whole training state (see training_state.h).
#include "exfusion/train/training_state.h"

#include "exfusion/train/run_files.h"
#include "exfusion/util/error.h"

namespace exfusion {
namespace {

constexpr const char* kModelPrefix = "model.";
constexpr const char* kOptimizerPrefix = "optimizer.";
constexpr const char* kStep = "trainer.step";
constexpr const char* kEpoch = "trainer.epoch";
constexpr const char* kBatch = "trainer.batch_in_epoch";
constexpr const char* kCpuRng = "rng.cpu";

int64_t scalar(const SafetensorsFile& file, const std::string& name,
               const std::filesystem::path& path) {
  const auto found = file.tensors.find(name);
  if (found == file.tensors.end() || found->second.numel() != 1 ||
      found->second.scalar_type() != torch::kInt64) {
    throw InputError(path.string() + ": training state without an int64 scalar '" + name + "'");
  }
  return found->second.item<int64_t>();
}

}  // namespace

void TrainingState::save(const std::filesystem::path& path) const {
  NamedTensors tensors;
  for (const auto& [name, tensor] : model) tensors.emplace_back(kModelPrefix + name, tensor);
  for (const auto& [name, tensor] : optimizer) {
    tensors.emplace_back(kOptimizerPrefix + name, tensor);
  }
  tensors.emplace_back(kStep, torch::tensor(step, torch::kInt64));
  tensors.emplace_back(kEpoch, torch::tensor(epoch, torch::kInt64));
  tensors.emplace_back(kBatch, torch::tensor(batch_in_epoch, torch::kInt64));
  if (cpu_rng.defined()) tensors.emplace_back(kCpuRng, cpu_rng);
  save_safetensors(path, tensors,
                   {{kConfigMetadataKey, to_json(config).dump()},
                    {kKindMetadataKey, "training-state"},
                    {kFormatMetadataKey, std::to_string(kFormatVersion)}});
}

TrainingState TrainingState::load(const std::filesystem::path& path) {
  auto checkpoint = load_checkpoint(path);
  if (!checkpoint.is_training_state) {
    throw InputError(path.string() + ": not a training state (a dense model?)");
  }
  TrainingState state;
  state.format = checkpoint.format;
  state.config = checkpoint.config;
  const std::string model_prefix = kModelPrefix, optimizer_prefix = kOptimizerPrefix;
  for (const auto& [name, tensor] : checkpoint.file.tensors) {
    if (name.rfind(model_prefix, 0) == 0) {
      state.model.emplace(name.substr(model_prefix.size()), tensor);
    } else if (name.rfind(optimizer_prefix, 0) == 0) {
      state.optimizer.emplace(name.substr(optimizer_prefix.size()), tensor);
    }
  }
  state.step = scalar(checkpoint.file, kStep, path);
  if (state.format >= 2) {
    state.epoch = scalar(checkpoint.file, kEpoch, path);
    state.batch_in_epoch = scalar(checkpoint.file, kBatch, path);
    const auto rng = checkpoint.file.tensors.find(kCpuRng);
    if (rng == checkpoint.file.tensors.end()) {
      throw InputError(path.string() + ": format 2 training state without '" +
                       std::string(kCpuRng) + "'");
    }
    state.cpu_rng = rng->second;
  }
  return state;
}

}  // namespace exfusion
