// Fused AdamW, weight-decay groups and gradient clipping (see optimizer.h). The fused kernel
// does the whole update of a list of tensors in one call; what is left on the host per step
// is one pass over the parameters to collect their gradients.
#include "exfusion/train/optimizer.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <set>
#include <tuple>

#include "exfusion/fusion/expert_kernels.h"
#include "exfusion/util/error.h"

namespace exfusion {
namespace {

std::vector<torch::Tensor> defined_grads(const std::vector<torch::Tensor>& params) {
  std::vector<torch::Tensor> grads;
  for (const auto& p : params) {
    if (p.grad().defined()) grads.push_back(p.grad());
  }
  return grads;
}

// L2 norm of all gradients together, as a float32 scalar on the first gradient's device.
torch::Tensor global_norm(const std::vector<torch::Tensor>& grads) {
  auto norms = at::_foreach_norm(grads, 2, torch::kFloat32);
  const auto device = grads.front().device();
  for (auto& norm : norms) norm = norm.to(device);
  return at::stack(norms).norm();
}

// The foreach kernels want every list on one device.
std::vector<std::vector<torch::Tensor>> by_device(const std::vector<torch::Tensor>& tensors) {
  std::vector<std::vector<torch::Tensor>> lists;
  for (const auto& t : tensors) {
    auto list = std::find_if(lists.begin(), lists.end(),
                             [&](const auto& l) { return l.front().device() == t.device(); });
    if (list == lists.end()) {
      lists.push_back({t});
    } else {
      list->push_back(t);
    }
  }
  return lists;
}

// min(1, max_norm / (norm + 1e-6)) as a device scalar, multiplied into `grads` (one foreach
// call per device); returned for gradients held elsewhere (factored ones).
torch::Tensor scale_to_norm(const std::vector<torch::Tensor>& grads, const torch::Tensor& norm,
                            double max_norm) {
  auto coefficient = (norm + 1e-6).reciprocal().mul_(max_norm).clamp_max_(1.0);
  for (const auto& list : by_device(grads)) {
    at::_foreach_mul_(list, coefficient.to(list.front().device()));
  }
  return coefficient;
}

}  // namespace

std::vector<ParamGroup> split_weight_decay(
    const std::vector<std::pair<std::string, torch::Tensor>>& named_params, double weight_decay,
    const std::set<std::string>& exempt) {
  ParamGroup decay{"decay", {}, {}, weight_decay}, no_decay{"no_decay", {}, {}, 0.0};
  for (const auto& [name, param] : named_params) {
    if (!param.requires_grad()) continue;
    auto& group = exempt.count(name) != 0 ? no_decay : decay;
    group.param_names.push_back(name);
    group.params.push_back(param);
  }
  return {std::move(decay), std::move(no_decay)};
}

const config::Choices<UpdateRule>& update_rule_names() {
  static const config::Choices<UpdateRule> names{
      {{"adamw", UpdateRule::kAdamW}, {"adamw_scale", UpdateRule::kAdamWScale}}};
  return names;
}

FusedAdamW::FusedAdamW(std::vector<ParamGroup> groups, AdamWOptions options, UpdateRule rule)
    : options_(options), rule_(rule) {
  for (auto& group : groups) {
    TORCH_CHECK(group.param_names.size() == group.params.size(), "param group '", group.name,
                "': ", group.param_names.size(), " names for ", group.params.size(), " params");
    Group g{group.weight_decay, {}};
    for (size_t i = 0; i < group.params.size(); ++i) {
      g.slots.push_back({group.param_names[i], group.params[i], {}, {}, {}, nullptr});
    }
    has_grad_.resize(has_grad_.size() + g.slots.size(), 0);
    groups_.push_back(std::move(g));
  }
  for (const auto& group : groups_) {
    if (!group.slots.empty() && group.slots.front().param.is_cuda()) {
      lr_on_device_ =
          torch::full({}, options_.lr, group.slots.front().param.options().dtype(torch::kFloat32));
      break;
    }
  }
}

torch::Tensor FusedAdamW::lr_beside(const torch::Tensor& param) const {
  if (lr_on_device_.defined() && param.device() == lr_on_device_.device()) return lr_on_device_;
  return {};
}

void FusedAdamW::set_lr(double lr) {
  options_.lr = lr;
  if (lr_on_device_.defined()) lr_on_device_.fill_(lr);
}

void FusedAdamW::ensure_state(Slot& slot) {
  if (slot.exp_avg.defined()) return;
  slot.exp_avg = torch::zeros_like(slot.param, at::MemoryFormat::Preserve);
  slot.exp_avg_sq = torch::zeros_like(slot.param, at::MemoryFormat::Preserve);
  // The fused kernel reads the step count as a float32 scalar beside the parameter.
  slot.step = torch::zeros({}, slot.param.options().dtype(torch::kFloat32));
}

void FusedAdamW::rebuild_buckets() {
  buckets_.clear();
  size_t index = 0;
  for (auto& group : groups_) {
    std::vector<std::tuple<torch::Device, torch::ScalarType, size_t>> keys;
    for (auto& slot : group.slots) {
      const bool has_grad = slot.param.grad().defined();
      has_grad_[index++] = has_grad;
      if (!has_grad) continue;
      ensure_state(slot);
      const auto device = slot.param.device();
      const auto dtype = slot.param.scalar_type();
      auto key = std::find_if(keys.begin(), keys.end(), [&](const auto& k) {
        return std::get<0>(k) == device && std::get<1>(k) == dtype;
      });
      if (key == keys.end()) {
        keys.emplace_back(device, dtype, buckets_.size());
        buckets_.push_back({group.weight_decay, {}, {}, {}, {}, {}});
        key = keys.end() - 1;
      }
      auto& bucket = buckets_[std::get<2>(*key)];
      bucket.params.push_back(slot.param);
      bucket.exp_avgs.push_back(slot.exp_avg);
      bucket.exp_avg_sqs.push_back(slot.exp_avg_sq);
      bucket.steps.push_back(slot.step);
    }
  }
  buckets_valid_ = true;
}

void FusedAdamW::set_factored_gradient(const std::string& param_name,
                                       std::shared_ptr<FactoredGradient> sink) {
  for (auto& group : groups_) {
    for (auto& slot : group.slots) {
      if (slot.name == param_name) {
        slot.factored = std::move(sink);
        return;
      }
    }
  }
  throw std::invalid_argument("FusedAdamW: no parameter named '" + param_name + "'");
}

void FusedAdamW::fold_factored_into_ordinary() {
  for (auto& group : groups_) {
    for (auto& slot : group.slots) {
      if (slot.factored && slot.factored->pending() && slot.param.grad().defined()) {
        slot.param.mutable_grad().add_(slot.factored->materialize(slot.param));
        slot.factored->clear();
      }
    }
  }
}

void FusedAdamW::step_factored() {
  struct Pending {
    Slot* slot;
    double weight_decay;
  };
  std::vector<Pending> pending;
  std::vector<torch::Tensor> steps;
  fold_factored_into_ordinary();
  for (auto& group : groups_) {
    for (auto& slot : group.slots) {
      if (!slot.factored || !slot.factored->pending()) continue;
      ensure_state(slot);
      pending.push_back({&slot, group.weight_decay});
      steps.push_back(slot.step);
    }
  }
  if (pending.empty()) return;
  at::_foreach_add_(steps, 1.0);
  for (const auto& [slot, weight_decay] : pending) {
    const AdamWOptions hyper{options_.lr, options_.beta1, options_.beta2, options_.eps,
                             weight_decay};
    const auto& f = *slot->factored;
    factored_adamw_(slot->param, slot->exp_avg, slot->exp_avg_sq, f.grad, f.coeffs, slot->step,
                    f.scale, hyper, lr_beside(slot->param));
    slot->factored->clear();
  }
}

void FusedAdamW::step_rms_scaled() {
  for (auto& group : groups_) {
    for (auto& slot : group.slots) {
      if (slot.factored && slot.factored->pending()) {
        throw std::logic_error(
            "AdamWScale given a factored expert gradient: the trainer sets no "
            "factored-gradient sinks for it");
      }
      if (!slot.param.grad().defined()) continue;
      ensure_state(slot);
      const auto& grad = slot.param.grad();
      slot.step.add_(1.0);
      slot.exp_avg.mul_(options_.beta1).add_(grad, 1.0 - options_.beta1);
      slot.exp_avg_sq.mul_(options_.beta2).addcmul_(grad, grad, 1.0 - options_.beta2);
      const auto denominator = slot.exp_avg_sq.sqrt().add_(options_.eps);
      const auto step = slot.step.to(torch::kFloat64);
      const auto rms = slot.param.norm().to(torch::kFloat64) /
                       std::sqrt(static_cast<double>(slot.param.numel()));
      const auto step_size = options_.lr * torch::sqrt(1.0 - torch::pow(options_.beta2, step)) /
                             (1.0 - torch::pow(options_.beta1, step)) * rms.clamp_min(1e-3);
      slot.param.sub_(slot.exp_avg / denominator * step_size.to(slot.param.scalar_type()));
      if (group.weight_decay > 0) slot.param.mul_(1.0 - options_.lr * group.weight_decay);
    }
  }
  ++steps_taken_;
}

void FusedAdamW::step() {
  torch::NoGradGuard no_grad;
  if (rule_ == UpdateRule::kAdamWScale) {
    step_rms_scaled();
    return;
  }
  step_factored();
  bool same_grads = buckets_valid_;
  size_t index = 0;
  for (const auto& group : groups_) {
    for (const auto& slot : group.slots) {
      same_grads = same_grads && (has_grad_[index++] != 0) == slot.param.grad().defined();
    }
  }
  if (!same_grads) rebuild_buckets();

  for (auto& bucket : buckets_) {
    // Gradients are new tensors after every zero_grad, so only this list is refilled.
    bucket.grads.clear();
    for (const auto& p : bucket.params) bucket.grads.push_back(p.grad());
    at::_foreach_add_(bucket.steps, 1.0);
    // `lr` is the device scalar (a Tensor) where there is one, else the double.
    const auto fused_adamw = [&](const auto& lr) {
      at::_fused_adamw_(bucket.params, bucket.grads, bucket.exp_avgs, bucket.exp_avg_sqs,
                        /*max_exp_avg_sqs=*/{}, bucket.steps, lr, options_.beta1, options_.beta2,
                        bucket.weight_decay, options_.eps, /*amsgrad=*/false,
                        /*maximize=*/false);
    };
    if (const auto lr = lr_beside(bucket.params.front()); lr.defined()) {
      fused_adamw(lr);
    } else {
      fused_adamw(options_.lr);
    }
    // Holding the gradients would keep their memory alive past zero_grad.
    bucket.grads.clear();
  }
  ++steps_taken_;
}

void FusedAdamW::zero_grad() {
  for (auto& group : groups_) {
    for (auto& slot : group.slots) {
      slot.param.mutable_grad().reset();
      if (slot.factored) slot.factored->clear();
    }
  }
}

torch::Tensor FusedAdamW::clip_grad_norm_async(double max_norm) {
  torch::NoGradGuard no_grad;
  // A bank's norm is ||m|| ||G|| only while G is its whole gradient.
  fold_factored_into_ordinary();
  std::vector<torch::Tensor> grads, factored_grads, factored_coeffs;
  std::vector<FactoredGradient*> factored;
  for (const auto& group : groups_) {
    for (const auto& slot : group.slots) {
      if (slot.param.grad().defined()) grads.push_back(slot.param.grad());
      if (slot.factored && slot.factored->pending()) {
        factored.push_back(slot.factored.get());
        factored_grads.push_back(slot.factored->grad);
        factored_coeffs.push_back(slot.factored->coeffs);
      }
    }
  }
  if (grads.empty() && factored.empty()) return torch::zeros({}, torch::kFloat32);
  std::vector<torch::Tensor> norms;
  const auto device = grads.empty() ? factored_grads.front().device() : grads.front().device();
  if (!grads.empty()) norms.push_back(global_norm(grads).to(device));
  if (!factored.empty()) {
    // Expert i's gradient is m_i G, so a bank's squared norm is ||m||² ||G||².
    const auto g = at::stack(at::_foreach_norm(factored_grads, 2, torch::kFloat32));
    const auto m = at::stack(at::_foreach_norm(factored_coeffs, 2, torch::kFloat32));
    norms.push_back((g * m).to(device).norm());
  }
  auto total = at::stack(norms).norm();
  const auto coefficient = scale_to_norm(grads, total, max_norm);
  for (auto* f : factored) f->scale = coefficient.to(f->grad.device());
  return total;
}

std::vector<std::pair<std::string, torch::Tensor>> FusedAdamW::state() const {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const auto& group : groups_) {
    for (const auto& slot : group.slots) {
      if (slot.exp_avg.defined()) {
        out.emplace_back(slot.name + ".exp_avg", slot.exp_avg);
        out.emplace_back(slot.name + ".exp_avg_sq", slot.exp_avg_sq);
        out.emplace_back(slot.name + ".step", slot.step);
      } else {
        // A checkpoint then has the same keys whichever parameters happened to get gradients.
        out.emplace_back(slot.name + ".exp_avg", torch::zeros_like(slot.param));
        out.emplace_back(slot.name + ".exp_avg_sq", torch::zeros_like(slot.param));
        out.emplace_back(slot.name + ".step",
                         torch::zeros({}, slot.param.options().dtype(torch::kFloat32)));
      }
    }
  }
  return out;
}

void FusedAdamW::load_state(const std::map<std::string, torch::Tensor>& state) {
  const auto find = [&](const std::string& key, at::IntArrayRef shape) -> const torch::Tensor& {
    const auto entry = state.find(key);
    if (entry == state.end()) throw InputError("optimizer state: missing '" + key + "'");
    if (entry->second.sizes() != shape) {
      throw InputError(c10::str("optimizer state: '", key, "' has shape ", entry->second.sizes(),
                                ", expected ", shape));
    }
    if (!entry->second.is_floating_point()) {
      throw InputError(c10::str("optimizer state: '", key, "' has dtype ",
                                entry->second.scalar_type(), ", expected a floating-point one"));
    }
    return entry->second;
  };
  // Everything is checked before anything is copied, so a bad checkpoint changes nothing. The
  // step is a bias-correction exponent: a whole number in [0, 2^24] (exact in float32); the
  // second moments are the square roots' arguments.
  std::set<std::string> expected;
  for (const auto& group : groups_) {
    for (const auto& slot : group.slots) {
      const auto& first = find(slot.name + ".exp_avg", slot.param.sizes());
      if (!torch::isfinite(first).all().item<bool>()) {
        throw InputError("optimizer state: '" + slot.name + ".exp_avg' holds non-finite values");
      }
      const auto& second = find(slot.name + ".exp_avg_sq", slot.param.sizes());
      const double step = find(slot.name + ".step", {}).item<double>();
      if (!(step >= 0 && step <= 16777216.0 && step == std::floor(step))) {
        throw InputError("optimizer state: '" + slot.name + ".step' is " + std::to_string(step) +
                         ", expected a whole number of steps from 0 to 2^24");
      }
      if (second.numel() > 0 && !(second.min().item<double>() >= 0)) {
        throw InputError("optimizer state: '" + slot.name +
                         ".exp_avg_sq' holds negative or NaN values, expected squares' averages");
      }
      expected.insert({slot.name + ".exp_avg", slot.name + ".exp_avg_sq", slot.name + ".step"});
    }
  }
  for (const auto& [key, tensor] : state) {
    if (expected.count(key) == 0) {
      throw InputError("optimizer state: unknown entry '" + key +
                       "' (no such parameter in this model)");
    }
  }
  torch::NoGradGuard no_grad;
  double max_step = 0;
  for (auto& group : groups_) {
    for (auto& slot : group.slots) {
      ensure_state(slot);
      slot.exp_avg.copy_(find(slot.name + ".exp_avg", slot.param.sizes()));
      slot.exp_avg_sq.copy_(find(slot.name + ".exp_avg_sq", slot.param.sizes()));
      const auto& step = find(slot.name + ".step", {});
      slot.step.copy_(step);
      max_step = std::max(max_step, step.item<double>());
    }
  }
  steps_taken_ = static_cast<int64_t>(max_step);
  buckets_valid_ = false;
}

double clip_grad_norm(const std::vector<torch::Tensor>& params, double max_norm) {
  torch::NoGradGuard no_grad;
  const auto grads = defined_grads(params);
  if (grads.empty()) return 0.0;
  const double total = global_norm(grads).item<double>();
  const double coefficient = max_norm / (total + 1e-6);
  if (coefficient < 1.0) at::_foreach_mul_(grads, coefficient);
  return total;
}

torch::Tensor clip_grad_norm_async(const std::vector<torch::Tensor>& params, double max_norm) {
  torch::NoGradGuard no_grad;
  const auto grads = defined_grads(params);
  if (grads.empty()) return torch::zeros({}, torch::kFloat32);
  auto total = global_norm(grads);
  scale_to_norm(grads, total, max_norm);
  return total;
}

}  // namespace exfusion
