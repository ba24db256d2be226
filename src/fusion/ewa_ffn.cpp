// The EWA FFN kind (see ewa_ffn.h).
#include "exfusion/fusion/ewa_ffn.h"

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <limits>

#include "exfusion/layers/linear.h"
#include "exfusion/layers/mlp.h"

namespace exfusion {

std::shared_ptr<FeedForwardImpl> EwaOptions::build(const FfnSite& site) const {
  return std::make_shared<EwaMlpImpl>(site.dim, site.hidden, *this, site.form);
}

std::string EwaOptions::run_name() const { return "ewa-n" + std::to_string(num_experts()); }

double EwaOptions::extra_step_bytes(const FfnSite& site, double tokens,
                                    int64_t /*gemm_bytes*/) const {
  const double n = static_cast<double>(num_experts());
  const double values = site.dense_parameters();
  // float32 throughout: AdamW over N − 1 more experts (read p, g, m, v; write p, m, v), Eq. (6)
  // (the mean reads N experts, the pull reads and writes them), and each token's copies into its
  // group and back out, forward and backward (read and write each).
  return 28.0 * (n - 1.0) * values + 4.0 * (3.0 * n + 2.0) * values +
         32.0 * tokens * static_cast<double>(site.dim);
}

void average_experts_(torch::Tensor& experts, double share_rate) {
  const torch::NoGradGuard no_grad;
  const auto n = static_cast<double>(experts.size(0));
  // E_i ← (1 − β)E_i + β/(N − 1)(ΣE − E_i) = keep·E_i + (1 − keep)·Ē, keep = 1 − βN/(N − 1).
  const double keep = 1.0 - share_rate * n / (n - 1.0);
  experts.lerp_(experts.mean(0, /*keepdim=*/true), 1.0 - keep);
}

double expert_spread(const torch::Tensor& experts) {
  const torch::NoGradGuard no_grad;
  const auto values = experts.detach().to(torch::kFloat64);
  const auto mean = values.mean(0, /*keepdim=*/true);
  const double deviation =
      std::sqrt((values - mean).pow(2).sum().item<double>() / static_cast<double>(values.size(0)));
  const double size = mean.norm().item<double>();
  if (size == 0.0) return deviation == 0.0 ? 0.0 : std::numeric_limits<double>::infinity();
  return deviation / size;
}

EwaMlpImpl::EwaMlpImpl(int64_t dim, int64_t hidden, EwaOptions options_, FfnForm form_)
    : options(options_), form(std::move(form_)) {
  const auto bank = [&](const std::string& name, int64_t in, int64_t out) {
    return ExpertBank(ExpertBankOptions(options.num_experts(), in, out)
                          .init(options.expert_init())
                          .init_std(form.init_std(name))
                          .truncated(form.truncated)
                          .noise_std(options.expert_noise_std())
                          .bias(form.bias));
  };
  if (form.gated) gate = register_module(form.gate_name, bank(form.gate_name, dim, hidden));
  fc1 = register_module(form.up_name, bank(form.up_name, dim, hidden));
  if (form.depthwise_kernel > 0) {
    dwconv = register_module("dwconv", DepthwiseGridConv(hidden, form.depthwise_kernel));
  }
  fc2 = register_module(form.down_name, bank(form.down_name, hidden, dim));
}

std::vector<std::pair<std::string, ExpertBankImpl*>> EwaMlpImpl::banks() const {
  std::vector<std::pair<std::string, ExpertBankImpl*>> out;
  if (gate) out.emplace_back(form.gate_name, gate.ptr().get());
  out.emplace_back(form.up_name, fc1.ptr().get());
  out.emplace_back(form.down_name, fc2.ptr().get());
  return out;
}

torch::Tensor EwaMlpImpl::forward(const torch::Tensor& x) {
  return is_training() ? partitioned_forward(x) : mean_forward(x);
}

torch::Tensor EwaMlpImpl::partitioned_forward(const torch::Tensor& x) {
  const auto dim = x.size(-1);
  const auto tokens = x.reshape({-1, dim});
  const int64_t count = tokens.size(0);
  const int64_t n = options.num_experts();
  // A sample is x's first axis ([B, N, C] tokens; [B, H, W, C] grids); a 2-D input's rows are one
  // token each.
  const int64_t samples = x.dim() >= 3 ? x.size(0) : count;
  last_partition_ =
      draw_token_partition(samples, samples > 0 ? count / samples : 0, n, options.partition(),
                           global_batch_place(), at::detail::getDefaultCPUGenerator());
  const int64_t capacity = last_partition_.capacity;
  const auto slot = last_partition_.slot.to(x.device(), /*non_blocking=*/true);
  // Rows in token order → [N, capacity, width], each group's tokens in its expert's rows (rows
  // of a group smaller than the largest stay zero and are never read back).
  const auto to_groups = [&](const torch::Tensor& rows) {
    return at::zeros({n * capacity, rows.size(1)}, rows.options())
        .index_copy(0, slot, rows)
        .view({n, capacity, rows.size(1)});
  };
  const auto to_tokens = [&](const torch::Tensor& grouped) {
    return grouped.reshape({n * capacity, grouped.size(2)}).index_select(0, slot);
  };
  const auto expert_linear = [](const torch::Tensor& in, const ExpertBankImpl& bank) {
    if (!bank.bias.defined()) return at::bmm(in, bank.weight.transpose(1, 2));
    return at::baddbmm(bank.bias.unsqueeze(1), in, bank.weight.transpose(1, 2));
  };
  const auto grouped = to_groups(tokens);
  auto up = expert_linear(grouped, *fc1);
  if (dwconv) {
    // The convolution mixes neighbouring tokens, whichever expert each came from: one shared
    // layer over the whole grid, as in the dense FFN.
    auto shape = x.sizes().vec();
    shape.back() = up.size(2);
    up = to_groups(dwconv->forward(to_tokens(up).view(shape)).reshape({count, up.size(2)}));
  }
  const auto hidden =
      hidden_activation(form, up, gate ? expert_linear(grouped, *gate) : torch::Tensor());
  return to_tokens(expert_linear(hidden, *fc2)).view(x.sizes());
}

std::vector<std::pair<std::string, torch::Tensor>> EwaMlpImpl::dense_tensors() const {
  const torch::NoGradGuard no_grad;
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const auto& [name, bank] : banks()) {
    out.emplace_back(name + ".weight", bank->weight.mean(0));
    if (bank->bias.defined()) out.emplace_back(name + ".bias", bank->bias.mean(0));
    if (dwconv && bank == fc1.get()) {
      out.emplace_back("dwconv.weight", dwconv->weight.detach());
      out.emplace_back("dwconv.bias", dwconv->bias.detach());
    }
  }
  return out;
}

torch::Tensor EwaMlpImpl::mean_forward(const torch::Tensor& x) const {
  const auto mean_linear = [](const torch::Tensor& in, const ExpertBankImpl& bank) {
    return linear(in, bank.weight.mean(0),
                  bank.bias.defined() ? bank.bias.mean(0) : torch::Tensor());
  };
  auto up = mean_linear(x, *fc1);
  if (dwconv) up = dwconv->forward(up);
  const auto hidden = hidden_activation(form, up, gate ? mean_linear(x, *gate) : torch::Tensor());
  return mean_linear(hidden, *fc2);
}

ExpertSets EwaMlpImpl::expert_sets() const { return form_expert_sets(form, options.num_experts()); }

nlohmann::json EwaMlpImpl::metrics() const {
  auto spread = nlohmann::json::object();
  for (const auto& [name, bank] : banks()) spread[name] = expert_spread(bank->weight);
  return {{"expert_spread", spread}};
}

void EwaMlpImpl::after_optimizer_step() {
  for (const auto& [name, bank] : banks()) {
    average_experts_(bank->weight, options.share_rate());
    if (bank->bias.defined()) average_experts_(bank->bias, options.share_rate());
  }
}

}  // namespace exfusion
