// Upcycling a dense model's FFNs into expert banks (see upcycle.h). Each expert is the dense
// FFN, then per method: unchanged (copy), with a random ⌊r·H⌋ of its hidden units drawn anew
// from the replaced values' mean and std (drop), or with Gaussian noise on them (noise).
#include "exfusion/upcycling/upcycle.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <cmath>
#include <set>
#include <vector>

#include "exfusion/fusion/delta_expert_bank.h"
#include "exfusion/fusion/expert_bank.h"
#include "exfusion/io/module_tensors.h"
#include "exfusion/layers/capabilities.h"
#include "exfusion/models/registry.h"
#include "exfusion/util/error.h"
#include "exfusion/util/shape_text.h"

namespace exfusion {
namespace {

// An FFN with expert sets (HasExpertSets), the path of its module and its sets' modules.
struct ExpertFfn {
  std::string path;  // "blocks.0.mlp"
  ExpertSets sets;
  std::vector<ExpertBankImpl*> banks;             // full experts, one per set, or
  std::vector<DeltaExpertBankImpl*> delta_banks;  // DeRS experts
  bool is_delta() const { return !delta_banks.empty(); }
  std::string name(const std::string& set, const char* part) const {
    return path + "." + set + "." + part;
  }
};

std::vector<ExpertFfn> expert_ffns(torch::nn::Module& model) {
  std::vector<ExpertFfn> found;
  for (const auto& item : model.named_modules("", /*include_self=*/true)) {
    const auto* capable = dynamic_cast<const HasExpertSets*>(item.value().get());
    if (capable == nullptr) continue;
    ExpertFfn ffn{item.key(), capable->expert_sets(), {}, {}};
    const auto children = item.value()->named_children();
    for (const auto& set : ffn.sets.sets) {
      auto* child = children.find(set.name);
      TORCH_CHECK(child != nullptr, "expert set '", set.name, "' is not a child of ", item.key());
      if (auto* bank = dynamic_cast<ExpertBankImpl*>(child->get())) ffn.banks.push_back(bank);
      if (auto* bank = dynamic_cast<DeltaExpertBankImpl*>(child->get())) {
        ffn.delta_banks.push_back(bank);
      }
    }
    TORCH_CHECK(
        ffn.banks.size() == ffn.sets.sets.size() || ffn.delta_banks.size() == ffn.sets.sets.size(),
        "the expert sets of ", item.key(), " are not all expert banks of one kind");
    found.push_back(std::move(ffn));
  }
  return found;
}

// DeRS upcycling: the shared base is the dense weight and every expert's bias the dense bias;
// the deltas keep their start (zero values, or B = 0), so every expert starts as the dense FFN.
void upcycle_into_deltas(DeltaExpertBankImpl& bank, const torch::Tensor& weight,
                         const torch::Tensor& bias) {
  bank.base.copy_(weight);
  if (bank.bias.defined()) bank.bias.copy_(bias.unsqueeze(0).expand_as(bank.bias));
}

const torch::Tensor& dense_tensor(const DenseTensors& dense, const std::string& name,
                                  at::IntArrayRef shape, const std::string& source) {
  const auto found = dense.find(name);
  if (found == dense.end()) {
    throw InputError(source + ": no tensor '" + name + "', which the upcycled model takes from " +
                     "the dense model (is it a dense checkpoint of the same architecture?)");
  }
  if (found->second.sizes() != shape) {
    throw InputError(source + ": tensor '" + name + "' has shape " +
                     shape_text(found->second.sizes()) + ", the upcycled model needs " +
                     shape_text(shape));
  }
  return found->second;
}

// Overwrites `values` at `index` along `dim` by the method: new draws from the replaced values'
// own mean and std (drop), or those values plus noise (noise).
void perturb(torch::Tensor& values, int64_t dim, const torch::Tensor& index, const InitConfig& init,
             at::Generator& generator) {
  if (index.numel() == 0) return;
  const auto replaced = values.index_select(dim, index);
  torch::Tensor drawn;
  if (init.method == UpcycleMethod::kDrop) {
    const double mean = replaced.mean().item<double>();
    const double std = replaced.numel() > 1 ? replaced.std(/*unbiased=*/false).item<double>() : 0;
    drawn = at::normal(mean, std, replaced.sizes(), generator, replaced.options());
  } else {
    drawn =
        replaced + at::normal(0.0, init.noise_std, replaced.sizes(), generator, replaced.options());
  }
  values.index_copy_(dim, index, drawn);
}

}  // namespace

std::vector<std::string> ffn_kinds_with_experts() {
  std::vector<std::string> names;
  // A 2-wide FFN of each kind, built to ask it; its init draws leave the global generator as
  // it was, so asking never changes a run's weights.
  auto generator = at::detail::getDefaultCPUGenerator();
  const auto state = generator.get_state();
  const FfnSite probe{"", 0, 2, 2, 1, FfnForm::plain()};
  for (const auto& name : ffn_kinds().names()) {
    const auto ffn = ffn_kinds().at(name, {}).defaults->build(probe);
    if (dynamic_cast<const HasExpertSets*>(ffn.get()) != nullptr) names.push_back(name);
  }
  generator.set_state(state);
  return names;
}

const config::Choices<UpcycleMethod>& upcycle_method_names() {
  static const config::Choices<UpcycleMethod> names{{{"copy", UpcycleMethod::kCopy},
                                                     {"drop", UpcycleMethod::kDrop},
                                                     {"noise", UpcycleMethod::kNoise}}};
  return names;
}

UpcycleReport upcycle_into(torch::nn::Module& model, const DenseTensors& dense,
                           const InitConfig& init, const std::string& source) {
  torch::NoGradGuard no_grad;
  auto generator = at::make_generator<at::CPUGeneratorImpl>(static_cast<uint64_t>(init.seed));
  UpcycleReport report;
  std::set<std::string> used;
  const auto ffns = expert_ffns(model);
  if (init.method != UpcycleMethod::kCopy &&
      std::any_of(ffns.begin(), ffns.end(), [](const ExpertFfn& ffn) { return ffn.is_delta(); })) {
    throw InputError(source + ": init.method " + config::to_json(init)["method"].dump() +
                     ": DeRS experts start as the dense FFN (a shared base, zero deltas); "
                     "upcycle them with init.method copy");
  }
  // The dense tensor `ffn`'s set `set` replaces, checked against `shape`, and recorded.
  const auto take = [&](const ExpertFfn& ffn, const ExpertSet& set, const char* part,
                        at::IntArrayRef shape) -> const torch::Tensor& {
    const auto name = ffn.name(set.name, part);
    const auto& tensor = dense_tensor(dense, name, shape, source);
    used.insert(name);
    report.dense_base.emplace(name, tensor.detach().clone());
    return tensor;
  };
  for (const auto& ffn : ffns) {
    const auto& sets = ffn.sets.sets;
    if (ffn.is_delta()) {
      for (size_t s = 0; s < sets.size(); ++s) {
        auto& bank = *ffn.delta_banks[s];
        const auto& weight = take(ffn, sets[s], "weight", bank.base.sizes());
        const auto bias = bank.bias.defined() ? take(ffn, sets[s], "bias", bank.bias[0].sizes())
                                              : torch::Tensor();
        upcycle_into_deltas(bank, weight, bias);
      }
    } else {
      std::vector<torch::Tensor> weights, biases;
      for (size_t s = 0; s < sets.size(); ++s) {
        const auto& bank = *ffn.banks[s];
        weights.push_back(take(ffn, sets[s], "weight", bank.weight[0].sizes()));
        biases.push_back(bank.bias.defined() ? take(ffn, sets[s], "bias", bank.bias[0].sizes())
                                             : torch::Tensor());
      }
      const auto& first = *ffn.banks.front();
      const int64_t hidden = sets.front().hidden_axis == HiddenAxis::kRows ? first.weight.size(1)
                                                                           : first.weight.size(2);
      const auto dropped =
          static_cast<int64_t>(std::floor(init.ratio * static_cast<double>(hidden)));
      for (int64_t e = 0; e < ffn.sets.num_experts; ++e) {
        // One draw of hidden units shared by every set (the paper), or one per set.
        std::vector<torch::Tensor> units(sets.size());
        if (init.method != UpcycleMethod::kCopy && dropped > 0) {
          const auto draw = [&] {
            return at::randperm(hidden, generator, torch::kLong).slice(0, 0, dropped);
          };
          for (size_t s = 0; s < sets.size(); ++s) {
            units[s] = s == 0 || init.independent_indices ? draw() : units[0];
          }
        }
        for (size_t s = 0; s < sets.size(); ++s) {
          auto& bank = *ffn.banks[s];
          auto weight = weights[s].to(torch::kCPU, bank.weight.scalar_type()).clone();
          auto bias = biases[s].defined()
                          ? biases[s].to(torch::kCPU, bank.bias.scalar_type()).clone()
                          : torch::Tensor();
          if (units[s].defined()) {
            const bool rows = sets[s].hidden_axis == HiddenAxis::kRows;
            perturb(weight, rows ? 0 : 1, units[s], init, generator);
            // A bias runs over the hidden units only in the layers into them.
            if (rows && bias.defined()) perturb(bias, 0, units[s], init, generator);
          }
          bank.weight[e].copy_(weight);
          if (bias.defined()) bank.bias[e].copy_(bias);
        }
      }
    }
    if (ffn.sets.router != nullptr) {
      for (auto& parameter : ffn.sets.router->parameters()) {
        parameter.copy_(at::normal(0.0, 0.02, parameter.sizes(), generator,
                                   parameter.options().device(torch::kCPU)));
      }
    }
    ++report.layers;
    report.experts = ffn.sets.num_experts;
  }
  if (ffns.empty()) {
    throw InputError(source + ": the model to upcycle into has no FFN with experts (set " +
                     "ffn.kind to " + config::join_or(ffn_kinds_with_experts()) + ")");
  }
  for (const auto& [tensor_name, tensor] : module_tensors(model)) {
    const std::string& name = tensor_name;  // C++17 lambdas cannot capture a structured binding
    const bool in_upcycled_ffn = std::any_of(ffns.begin(), ffns.end(), [&](const ExpertFfn& ffn) {
      return name.rfind(ffn.path + ".", 0) == 0;
    });
    // Inside an upcycled FFN only a layer its experts share (PVT v2's depthwise convolution)
    // has the dense model's name and shape: the expert sets have the experts' axis, and the
    // router and the fusion weights are new.
    const auto dense_twin = dense.find(tensor_name);
    if (in_upcycled_ffn &&
        (dense_twin == dense.end() || dense_twin->second.sizes() != tensor.sizes())) {
      continue;
    }
    auto target = tensor;  // shares storage with the module's tensor
    target.copy_(dense_tensor(dense, tensor_name, tensor.sizes(), source));
    used.insert(tensor_name);
  }
  for (const auto& [dense_name, tensor] : dense) {
    if (used.count(dense_name) == 0) {
      throw InputError(source + ": tensor '" + dense_name +
                       "' has no place in the upcycled model (another architecture?)");
    }
  }
  return report;
}

}  // namespace exfusion
