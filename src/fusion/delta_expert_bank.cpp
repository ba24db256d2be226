// DeRS experts: a shared base plus sparse or low-rank deltas (see delta_expert_bank.h).
#include "exfusion/fusion/delta_expert_bank.h"

#include <algorithm>
#include <cmath>

#include "exfusion/util/init.h"

namespace exfusion {

const config::Choices<DeltaForm>& delta_form_names() {
  static const config::Choices<DeltaForm> names{
      {{"sparse", DeltaForm::kSparse}, {"low-rank", DeltaForm::kLowRank}}};
  return names;
}

DeltaExpertBankImpl::DeltaExpertBankImpl(DeltaExpertBankOptions options_) : options(options_) {
  TORCH_CHECK(options.num_experts() >= 1, "DeltaExpertBank needs at least one expert");
  const int64_t n = options.num_experts(), out = options.out_features(), in = options.in_features();
  base = register_parameter("base", torch::empty({out, in}));
  if (options.bias()) bias = register_parameter("bias", torch::zeros({n, out}));
  torch::NoGradGuard no_grad;
  init_normal_(base, options.init_std(), options.truncated());
  if (options.form() == DeltaForm::kSparse) {
    const int64_t k = delta_size();
    std::vector<torch::Tensor> positions;
    positions.reserve(static_cast<size_t>(n));
    for (int64_t e = 0; e < n; ++e) {
      // Sorted, so that the scatter walks memory in order.
      positions.push_back(
          std::get<0>(torch::randperm(out * in, torch::kLong).slice(0, 0, k).sort()));
    }
    delta_values = register_parameter("delta_values", torch::zeros({n, k}));
    delta_positions = register_buffer("delta_positions", torch::stack(positions));
  } else {
    const int64_t r = options.rank();
    delta_a = register_parameter("delta_a",
                                 torch::randn({n, out, r}) / std::sqrt(static_cast<double>(r)));
    delta_b = register_parameter("delta_b", torch::zeros({n, r, in}));
  }
}

int64_t DeltaExpertBankImpl::delta_size() const {
  const double positions =
      static_cast<double>(options.out_features()) * static_cast<double>(options.in_features());
  return std::clamp<int64_t>(std::llround(options.keep_ratio() * positions), 1,
                             static_cast<int64_t>(positions));
}

std::pair<torch::Tensor, torch::Tensor> DeltaExpertBankImpl::expert_weights() const {
  const int64_t n = options.num_experts(), out = options.out_features(), in = options.in_features();
  torch::Tensor deltas;
  if (options.form() == DeltaForm::kSparse) {
    deltas = torch::zeros({n, out * in}, delta_values.options())
                 .scatter(1, delta_positions, delta_values)
                 .view({n, out, in});
  } else {
    deltas = torch::bmm(delta_a, delta_b);
  }
  return {base.unsqueeze(0) + deltas, bias};
}

std::pair<torch::Tensor, torch::Tensor> DeltaExpertBankImpl::fuse(const torch::Tensor& m) const {
  const int64_t n = options.num_experts(), out = options.out_features(), in = options.in_features();
  const auto weights = m.to(base.scalar_type());
  torch::Tensor mixed_delta;
  if (options.form() == DeltaForm::kSparse) {
    mixed_delta = torch::zeros({out * in}, delta_values.options())
                      .index_add(0, delta_positions.reshape({-1}),
                                 (delta_values * weights.unsqueeze(1)).reshape({-1}))
                      .view({out, in});
  } else {
    const int64_t r = options.rank();
    // Σ_i m_i A_i B_i = [m_1 A_1 … m_N A_N] · [B_1; …; B_N].
    const auto scaled_a =
        (delta_a * weights.view({n, 1, 1})).permute({1, 0, 2}).reshape({out, n * r});
    mixed_delta = torch::mm(scaled_a, delta_b.reshape({n * r, in}));
  }
  return {weights.sum() * base + mixed_delta,
          bias.defined() ? torch::mv(bias.t(), weights) : torch::Tensor()};
}

}  // namespace exfusion
