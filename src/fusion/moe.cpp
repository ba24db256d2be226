// Top-k mixture of experts with capacity (see moe.h).
#include "exfusion/fusion/moe.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "exfusion/layers/mlp.h"
#include "exfusion/util/error.h"
#include "exfusion/util/global_batch.h"

namespace exfusion {

void MoeOptions::validate(const config::Location& at) const {
  if (num_experts() < 1) config::fail(at, "num_experts", num_experts(), "at least 1");
  if (top_k() < 1 || top_k() > num_experts()) {
    config::fail(at, "top_k", top_k(),
                 "1 to " + at.key_path("num_experts") + " = " + std::to_string(num_experts()));
  }
  if (!(capacity_factor() >= 0.0)) {
    config::fail(at, "capacity_factor", capacity_factor(), "0 (no dropping) or a positive factor");
  }
  if (!(aux_loss_coef() >= 0.0)) {
    config::fail(at, "aux_loss_coef", aux_loss_coef(), "a non-negative coefficient");
  }
}

std::shared_ptr<FeedForwardImpl> MoeOptions::build(const FfnSite& site) const {
  return std::make_shared<MoeMlpImpl>(site.dim, site.hidden, *this, site.form);
}

std::string MoeOptions::run_name() const {
  return "moe-n" + std::to_string(num_experts()) + "-k" + std::to_string(top_k());
}

double MoeOptions::forward_macs_per_token(const FfnSite& site) const {
  return site.dense_macs_per_token() * static_cast<double>(top_k()) +
         static_cast<double>(site.dim) * static_cast<double>(num_experts());
}

TopKMixtureImpl::TopKMixtureImpl(int64_t dim, MoeOptions options_, FfnForm form_)
    : options(options_), form(std::move(form_)) {
  options.validate({"", "ffn"});
  if (form.depthwise_kernel > 0) {
    throw InputError(
        "ffn.kind: a routed mixture of experts cannot replace this model's FFN: its depthwise "
        "convolution (PVT v2's dwconv) mixes neighbouring tokens between fc1 and fc2, and a "
        "routed expert sees only the tokens sent to it; use dense, exfusion or ders-exfusion "
        "(which keep the convolution as one shared layer), or a PVT v1 (model.kind pvt_v1)");
  }
  router = register_module("router", Linear(LinearOptions(dim, options.num_experts()).bias(false)));
}

ExpertSets TopKMixtureImpl::expert_sets() const {
  return form_expert_sets(form, options.num_experts(), router.ptr());
}

void TopKMixtureImpl::reset_router() {
  const torch::NoGradGuard no_grad;
  router->weight.normal_(0.0, 0.02);
}

MoeMlpImpl::MoeMlpImpl(int64_t dim, int64_t hidden, MoeOptions options_, FfnForm form_)
    : TopKMixtureImpl(dim, options_, std::move(form_)) {
  const auto n = options.num_experts();
  const auto bank = [&](const std::string& name, int64_t in, int64_t out) {
    return ExpertBank(ExpertBankOptions(n, in, out)
                          .bias(form.bias)
                          .init_std(form.init_std(name))
                          .truncated(form.truncated));
  };
  if (form.gated) gate = register_module(form.gate_name, bank(form.gate_name, dim, hidden));
  fc1 = register_module(form.up_name, bank(form.up_name, dim, hidden));
  fc2 = register_module(form.down_name, bank(form.down_name, hidden, dim));
  reset_router();
}

TopKMixtureImpl::StackedExperts MoeMlpImpl::stacked_experts() const {
  return {fc1->weight,
          fc1->bias,
          fc2->weight,
          fc2->bias,
          gate ? gate->weight : torch::Tensor(),
          gate ? gate->bias : torch::Tensor()};
}

torch::Tensor TopKMixtureImpl::forward(const torch::Tensor& x) {
  const auto dim = x.size(-1);
  const auto tokens = x.reshape({-1, dim});
  const int64_t s = tokens.size(0), n = options.num_experts(), k = options.top_k();
  const auto long_options = torch::TensorOptions(x.device()).dtype(torch::kLong);

  // Routing in at least float32, also under bf16 autocast.
  const auto logits = router->forward(tokens);
  const auto probs =
      at::softmax(logits.to(at::promote_types(logits.scalar_type(), torch::kFloat32)), -1);
  auto [gates, chosen] = probs.topk(k, -1);
  if (k > 1 || options.renormalize_top1()) gates = gates / gates.sum(-1, /*keepdim=*/true);

  // Assignments in priority order: every token's first choice, then every second choice.
  const auto expert_of = chosen.t().reshape({-1});
  const auto gate_of = gates.t().reshape({-1});
  const auto token_of = at::arange(s, long_options).repeat({k});
  const auto one_hot = at::zeros({k * s, n}, long_options).scatter_(1, expert_of.unsqueeze(1), 1);
  const auto position = (one_hot.cumsum(0) - 1).gather(1, expert_of.unsqueeze(1)).squeeze(1);
  const double factor = options.capacity_factor();
  const int64_t capacity =
      factor > 0
          ? std::min<int64_t>(s, static_cast<int64_t>(std::ceil(
                                     factor * static_cast<double>(k * s) / static_cast<double>(n))))
          : s;
  const auto keep = position < capacity;
  // Dropped assignments go to one spare row past the N·capacity expert slots.
  const auto slot = at::where(keep, expert_of * capacity + position, n * capacity);

  const auto dispatched = at::zeros({n * capacity + 1, dim}, tokens.options())
                              .index_add(0, slot, tokens.index_select(0, token_of))
                              .narrow(0, 0, n * capacity)
                              .view({n, capacity, dim});
  const auto experts = stacked_experts();
  // Each expert's linear layer over its slots: [N, capacity, in] → [N, capacity, out].
  const auto expert_linear = [](const torch::Tensor& in, const torch::Tensor& weight,
                                const torch::Tensor& bias) {
    if (!bias.defined()) return at::bmm(in, weight.transpose(1, 2));
    return at::baddbmm(bias.unsqueeze(1), in, weight.transpose(1, 2));
  };
  const auto hidden =
      hidden_activation(form, expert_linear(dispatched, experts.up_weight, experts.up_bias),
                        experts.gate_weight.defined()
                            ? expert_linear(dispatched, experts.gate_weight, experts.gate_bias)
                            : torch::Tensor());
  const auto expert_out = expert_linear(hidden, experts.down_weight, experts.down_bias);
  const auto rows =
      at::cat({expert_out.reshape({n * capacity, dim}), at::zeros({1, dim}, expert_out.options())});
  const auto weight = (gate_of * keep.to(gate_of.scalar_type())).unsqueeze(1);
  const auto combined = at::zeros({s, dim}, weight.options())
                            .index_add(0, token_of, rows.index_select(0, slot) * weight);

  // Switch/GShard balance: f_e from the first choices, P_e the mean router probability, both
  // over the global batch under data parallelism.
  const auto first_choice =
      global_batch_mean(at::zeros({n}, probs.options())
                            .index_add(0, chosen.select(1, 0), at::ones({s}, probs.options())) /
                        static_cast<double>(s));
  aux_loss_ = options.aux_loss_coef() * static_cast<double>(n) *
              (first_choice * global_batch_mean(probs.mean(0))).sum();
  {
    torch::NoGradGuard no_grad;
    const auto stats = at::stack({1.0 - global_batch_mean(keep.to(torch::kFloat32).mean()),
                                  aux_loss_.detach().to(torch::kFloat32)});
    if (routing_stats_.defined() && routing_stats_.device() == stats.device()) {
      routing_stats_.copy_(stats);
    } else {
      routing_stats_ = stats;
    }
  }
  return combined.to(expert_out.scalar_type()).view(x.sizes());
}

nlohmann::json TopKMixtureImpl::metrics() const {
  if (!routing_stats_.defined()) return nlohmann::json::object();
  const auto values = routing_stats_.to(torch::kCPU, torch::kFloat64);
  return {
      {"routing",
       {{"dropped_fraction", values[0].item<double>()}, {"aux_loss", values[1].item<double>()}}}};
}

}  // namespace exfusion
