// What a module can do beyond its forward, as small interfaces that the trainer, fuse, info and
// the metrics find by walking any module tree (for_each_capable). A kind implements only what
// it offers: ExFusion has a dense form and reports its fusion weights, MoE adds a loss and
// reports its routing, an expert bank takes its gradient in factored form.
#pragma once
#include <torch/nn/module.h>
#include <torch/types.h>

#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <utility>
#include <vector>

namespace exfusion {

struct FactoredGradient;

// The module's eval-mode function as plain dense tensors: the names and shapes of the module a
// dense model has in its place (an ExFusion FFN gives fc1.weight, fc1.bias, fc2.weight, ...).
class HasDenseForm {
 public:
  virtual ~HasDenseForm() = default;
  virtual std::vector<std::pair<std::string, torch::Tensor>> dense_tensors() const = 0;
};

// A term the module adds to the training loss (MoE load balancing), from its last forward pass.
class AddsAuxiliaryLoss {
 public:
  virtual ~AddsAuxiliaryLoss() = default;
  virtual torch::Tensor auxiliary_loss() const = 0;
};

// A module that changes its own parameters after every optimizer step, outside autograd (EWA
// pulls each expert towards the others). The trainer calls it once per step, after the update,
// on every data-parallel rank alike; the optimizer's moments are left as they are.
class UpdatesAfterOptimizerStep {
 public:
  virtual ~UpdatesAfterOptimizerStep() = default;
  virtual void after_optimizer_step() = 0;
};

// A module whose training step cannot be captured once in a CUDA graph and replayed (EWA draws
// its token partition on the host every step); the reason, for the trainer's error.
class BlocksCudaGraphCapture {
 public:
  virtual ~BlocksCudaGraphCapture() = default;
  virtual std::string cuda_graph_obstacle() const = 0;
};

// Metrics of the module's current state, by group: {"fusion_weights": {"m": [...]}} or
// {"routing": {"dropped_fraction": ..., "aux_loss": ...}}. Reads values back to the host.
class ReportsMetrics {
 public:
  virtual ~ReportsMetrics() = default;
  virtual nlohmann::json metrics() const = 0;
};

// A parameter whose gradient an optimizer may take as (dW̄, m) instead of N expert gradients.
class TakesFactoredGradient {
 public:
  virtual ~TakesFactoredGradient() = default;
  virtual std::string factored_parameter() const = 0;  // its name within the module: "weight"
  virtual std::shared_ptr<FactoredGradient> factored_gradient_sink() const = 0;
  virtual void set_factored_gradient_sink(std::shared_ptr<FactoredGradient> sink) = 0;
};

// Parameters of the module that weight decay leaves alone (norms, biases, class tokens and
// position embeddings, fusion weights), by their names within it: "bias", or "proj.bias" for a
// child of a library type that cannot declare its own. The module owning a tensor says what it
// is; no optimizer matches names.
class ExemptFromWeightDecay {
 public:
  virtual ~ExemptFromWeightDecay() = default;
  virtual std::vector<std::string> exempt_from_weight_decay() const = 0;
};

// Every exempt parameter under `root`, by its path from `root` ("blocks.0.norm1.weight").
std::set<std::string> parameters_exempt_from_weight_decay(const torch::nn::Module& root);

// Which axis of an expert's weight [out, in] runs over the FFN's hidden units: the rows of the
// layers into the hidden units (up, gate), the columns of the layer out of them (down).
enum class HiddenAxis { kRows, kColumns };

// One set of N experts standing where one dense linear layer stands. `name` is both the child
// module holding the experts (an ExpertBank or a DeRS DeltaExpertBank) and the dense layer's
// name, so the dense tensors `<ffn path>.<name>.weight` and `.bias` are the ones it replaces.
struct ExpertSet {
  std::string name;
  HiddenAxis hidden_axis = HiddenAxis::kRows;
};

struct ExpertSets {
  int64_t num_experts = 0;
  std::vector<ExpertSet> sets;  // the layers into the hidden units first, then out of them
  // The module that routes tokens to experts (MoE), drawn anew when experts are upcycled; null
  // where the experts are fused (ExFusion).
  std::shared_ptr<torch::nn::Module> router;
};

// An FFN whose linear layers are expert sets: what upcycling fills from a dense FFN, DeRS
// compresses, and the bench and `exfusion info` count.
class HasExpertSets {
 public:
  virtual ~HasExpertSets() = default;
  virtual ExpertSets expert_sets() const = 0;
};

// Calls `visit(path, capability)` for every module under `root` (root included, path "") that
// implements `Capability`, in named_modules order.
template <class Capability, class Visit>
void for_each_capable(const torch::nn::Module& root, Visit&& visit) {
  for (const auto& item : root.named_modules("", /*include_self=*/true)) {
    if (auto* capable = dynamic_cast<Capability*>(item.value().get())) visit(item.key(), *capable);
  }
}

// Every ReportsMetrics module's metrics, {group: {owner: value}}, where the owner is the path of
// the module holding the reporter ("blocks.0" for the FFN at blocks.0.mlp); {} when none reports.
nlohmann::json collect_metrics(const torch::nn::Module& root);

}  // namespace exfusion
