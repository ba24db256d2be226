// Broadcasting a training state and comparing replicas (see replica_sync.h). Rank 0 describes
// its state (names, dtypes, shapes, scalars) through the store; the tensors follow as
// broadcasts in that order.
#include "exfusion/train/replica_sync.h"

#include <string>
#include <vector>

#include "exfusion/io/module_tensors.h"
#include "exfusion/util/tensor_checksum.h"

namespace exfusion {
namespace {

nlohmann::json describe(const std::map<std::string, torch::Tensor>& tensors) {
  auto list = nlohmann::json::array();
  for (const auto& [name, tensor] : tensors) {
    list.push_back({name, static_cast<int>(tensor.scalar_type()), tensor.sizes().vec()});
  }
  return list;
}

// The tensors `list` describes, from rank 0: its own on rank 0, received elsewhere.
std::map<std::string, torch::Tensor> receive(const nlohmann::json& list,
                                             const std::map<std::string, torch::Tensor>& own,
                                             DistributedGroup& group) {
  std::map<std::string, torch::Tensor> tensors;
  for (const auto& entry : list) {
    const auto name = entry[0].get<std::string>();
    torch::Tensor tensor;
    if (group.writer()) {
      tensor = own.at(name).detach().to(torch::kCPU).contiguous().clone();
    } else {
      tensor = torch::empty(
          entry[2].get<std::vector<int64_t>>(),
          torch::TensorOptions().dtype(static_cast<torch::ScalarType>(entry[1].get<int>())));
    }
    group.broadcast_(tensor);
    tensors.emplace(name, tensor);
  }
  return tensors;
}

}  // namespace

void synchronize_replicas(Trainer& trainer, const RunConfig& config, DistributedGroup& group) {
  TrainingState state;
  nlohmann::json manifest;
  if (group.writer()) {
    state = trainer.state(config);
    const auto& p = state.progress;
    manifest = {{"model", describe(state.model)},
                {"optimizer", describe(state.optimizer)},
                {"rng", describe({{"cpu", state.cpu_rng}})},
                {"position", {state.step, state.epoch, state.batch_in_epoch}},
                {"window", {p.window_steps, p.window_samples, p.window_tokens}},
                {"metrics",
                 {{"names", p.metric_names},
                  {"window_sums", p.window_metric_sums},
                  {"last", p.last_metrics}}},
                {"skipped", p.skipped_samples},
                {"times", {p.window_loss_sum, p.last_loss, p.train_seconds, p.eval_seconds}}};
  }
  manifest = nlohmann::json::parse(group.broadcast_text("state", manifest.dump()));
  auto model = receive(manifest["model"], state.model, group);
  auto optimizer = receive(manifest["optimizer"], state.optimizer, group);
  auto rng = receive(manifest["rng"], {{"cpu", state.cpu_rng}}, group);
  if (group.writer()) return;
  state.config = config;
  state.model = std::move(model);
  state.optimizer = std::move(optimizer);
  state.cpu_rng = rng.at("cpu");
  state.step = manifest["position"][0];
  state.epoch = manifest["position"][1];
  state.batch_in_epoch = manifest["position"][2];
  auto& p = state.progress;
  p.window_steps = manifest["window"][0];
  p.window_samples = manifest["window"][1];
  p.window_tokens = manifest["window"][2];
  p.metric_names = manifest["metrics"]["names"].get<std::vector<std::string>>();
  p.window_metric_sums = manifest["metrics"]["window_sums"].get<std::vector<double>>();
  p.last_metrics = manifest["metrics"]["last"].get<std::vector<double>>();
  p.skipped_samples = manifest["skipped"];
  p.window_loss_sum = manifest["times"][0];
  p.last_loss = manifest["times"][1];
  p.train_seconds = manifest["times"][2];
  p.eval_seconds = manifest["times"][3];
  state.world_size = group.size();
  trainer.restore(state);
}

nlohmann::json compare_replicas(const Trainer& trainer, DistributedGroup& group) {
  auto mine = nlohmann::json::object();
  for (const auto& [name, tensor] : module_tensors(*trainer.model())) {
    mine[name] = crc32_of(tensor);
  }
  const auto all = group.gather_text("replica", mine.dump());
  const auto reference = nlohmann::json::parse(all.at(0));
  auto differs = nlohmann::json::array();
  for (size_t r = 1; r < all.size(); ++r) {
    const auto theirs = nlohmann::json::parse(all[r]);
    for (const auto& [name, crc] : reference.items()) {
      if (!theirs.contains(name) || theirs[name] != crc) {
        differs.push_back({{"rank", r}, {"tensor", name}});
        break;
      }
    }
  }
  return {{"identical", differs.empty()}, {"differs", differs}};
}

}  // namespace exfusion
