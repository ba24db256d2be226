// Upcycling a dense model's FFNs into expert banks (see upcycle.h). Each expert is the dense
// FFN, then per method: unchanged (copy), with a random ⌊r·H⌋ of its hidden units drawn anew
// from the replaced values' mean and std (drop), or with Gaussian noise on them (noise).
#include "exfusion/upcycling/upcycle.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <cmath>
#include <set>
#include <sstream>
#include <tuple>
#include <vector>

#include "exfusion/fusion/delta_expert_bank.h"
#include "exfusion/fusion/expert_bank.h"
#include "exfusion/io/module_tensors.h"
#include "exfusion/util/error.h"

namespace exfusion {
namespace {

std::string shape_text(at::IntArrayRef sizes) {
  std::ostringstream out;
  out << sizes;
  return out.str();
}

// An FFN whose fc1 and fc2 are N full experts (ExpertBank) or DeRS experts (DeltaExpertBank).
struct ExpertFfn {
  std::string path;  // "blocks.0.mlp"
  ExpertBankImpl* up = nullptr;
  ExpertBankImpl* down = nullptr;
  DeltaExpertBankImpl* delta_up = nullptr;
  DeltaExpertBankImpl* delta_down = nullptr;
  torch::nn::Module* router = nullptr;  // a direct child "router" (MoE), else null
};

std::vector<ExpertFfn> expert_ffns(torch::nn::Module& model) {
  std::vector<ExpertFfn> found;
  for (const auto& item : model.named_modules("", /*include_self=*/true)) {
    ExpertFfn ffn{item.key()};
    for (const auto& child : item.value()->named_children()) {
      auto* bank = dynamic_cast<ExpertBankImpl*>(child.value().get());
      auto* delta_bank = dynamic_cast<DeltaExpertBankImpl*>(child.value().get());
      if (child.key() == "fc1") std::tie(ffn.up, ffn.delta_up) = std::tie(bank, delta_bank);
      if (child.key() == "fc2") std::tie(ffn.down, ffn.delta_down) = std::tie(bank, delta_bank);
      if (child.key() == "router") ffn.router = child.value().get();
    }
    if ((ffn.up != nullptr && ffn.down != nullptr) ||
        (ffn.delta_up != nullptr && ffn.delta_down != nullptr)) {
      found.push_back(ffn);
    }
  }
  return found;
}

// DeRS upcycling: the shared base is the dense weight and every expert's bias the dense bias;
// the deltas keep their start (zero values, or B = 0), so every expert starts as the dense FFN.
void upcycle_into_deltas(DeltaExpertBankImpl& bank, const torch::Tensor& weight,
                         const torch::Tensor& bias) {
  bank.base.copy_(weight);
  bank.bias.copy_(bias.unsqueeze(0).expand_as(bank.bias));
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
      std::any_of(ffns.begin(), ffns.end(), [](const ExpertFfn& ffn) { return ffn.delta_up; })) {
    throw InputError(source + ": init.method " + config::to_json(init)["method"].dump() +
                     ": DeRS experts start as the dense FFN (a shared base, zero deltas); "
                     "upcycle them with init.method copy");
  }
  for (const auto& ffn : ffns) {
    if (ffn.delta_up != nullptr) {
      const auto name = [&](const char* part) { return ffn.path + "." + part; };
      const auto& w1 = dense_tensor(dense, name("fc1.weight"), ffn.delta_up->base.sizes(), source);
      const auto& b1 = dense_tensor(dense, name("fc1.bias"), ffn.delta_up->bias[0].sizes(), source);
      const auto& w2 =
          dense_tensor(dense, name("fc2.weight"), ffn.delta_down->base.sizes(), source);
      const auto& b2 =
          dense_tensor(dense, name("fc2.bias"), ffn.delta_down->bias[0].sizes(), source);
      upcycle_into_deltas(*ffn.delta_up, w1, b1);
      upcycle_into_deltas(*ffn.delta_down, w2, b2);
      for (const char* part : {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"}) {
        used.insert(name(part));
        report.dense_base.emplace(name(part), dense.at(name(part)).detach().clone());
      }
      if (ffn.router != nullptr) {
        for (auto& parameter : ffn.router->parameters()) {
          parameter.copy_(at::normal(0.0, 0.02, parameter.sizes(), generator,
                                     parameter.options().device(torch::kCPU)));
        }
      }
      ++report.layers;
      report.experts = ffn.delta_up->options.num_experts();
      continue;
    }
    const auto& up = *ffn.up;
    const auto& down = *ffn.down;
    const int64_t experts = up.weight.size(0), hidden = up.weight.size(1);
    const auto name = [&](const char* part) { return ffn.path + "." + part; };
    const auto& up_weight = dense_tensor(dense, name("fc1.weight"), up.weight[0].sizes(), source);
    const auto& up_bias = dense_tensor(dense, name("fc1.bias"), up.bias[0].sizes(), source);
    const auto& down_weight =
        dense_tensor(dense, name("fc2.weight"), down.weight[0].sizes(), source);
    const auto& down_bias = dense_tensor(dense, name("fc2.bias"), down.bias[0].sizes(), source);
    for (const char* part : {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"}) {
      used.insert(name(part));
      report.dense_base.emplace(name(part), dense.at(name(part)).detach().clone());
    }
    const auto dropped = static_cast<int64_t>(std::floor(init.ratio * static_cast<double>(hidden)));
    for (int64_t e = 0; e < experts; ++e) {
      auto w_up = up_weight.to(torch::kCPU, up.weight.scalar_type()).clone();
      auto b_up = up_bias.to(torch::kCPU, up.bias.scalar_type()).clone();
      auto w_down = down_weight.to(torch::kCPU, down.weight.scalar_type()).clone();
      if (init.method != UpcycleMethod::kCopy && dropped > 0) {
        const auto units = [&] {
          return at::randperm(hidden, generator, torch::kLong).slice(0, 0, dropped);
        };
        const auto up_units = units();
        const auto down_units = init.independent_indices ? units() : up_units;
        perturb(w_up, 0, up_units, init, generator);
        perturb(b_up, 0, up_units, init, generator);
        perturb(w_down, 1, down_units, init, generator);
      }
      ffn.up->weight[e].copy_(w_up);
      ffn.up->bias[e].copy_(b_up);
      ffn.down->weight[e].copy_(w_down);
      ffn.down->bias[e].copy_(down_bias);
    }
    if (ffn.router != nullptr) {
      for (auto& parameter : ffn.router->parameters()) {
        parameter.copy_(at::normal(0.0, 0.02, parameter.sizes(), generator,
                                   parameter.options().device(torch::kCPU)));
      }
    }
    ++report.layers;
    report.experts = experts;
  }
  if (ffns.empty()) {
    throw InputError(source + ": the model to upcycle into has no FFN with experts (set " +
                     "ffn.kind to moe, exfusion, ders-moe or ders-exfusion)");
  }
  for (const auto& [tensor_name, tensor] : module_tensors(model)) {
    const std::string& name = tensor_name;  // C++17 lambdas cannot capture a structured binding
    const bool in_upcycled_ffn = std::any_of(ffns.begin(), ffns.end(), [&](const ExpertFfn& ffn) {
      return name.rfind(ffn.path + ".", 0) == 0;
    });
    if (in_upcycled_ffn) continue;
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
