// What the code that casts its own inputs (custom autograd nodes, the expert bank's fused
// weight, the ATen references) needs of LibTorch's autocast: the dtype autocast would compute
// in, and a guard that keeps autocast from casting again inside.
#pragma once
#include <ATen/autocast_mode.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/types.h>

namespace exfusion {

// Autocast's lower-precision dtype for `t`'s device where autocast is on there (autocast
// leaves float64 alone), `t`'s own dtype otherwise.
inline c10::ScalarType autocast_compute_dtype(const torch::Tensor& t) {
  const auto device_type = t.device().type();
  if (at::autocast::is_autocast_enabled(device_type) && t.scalar_type() != torch::kFloat64) {
    return at::autocast::get_autocast_dtype(device_type);
  }
  return t.scalar_type();
}

// Ops run in this guard's scope see no autocast: they compute in their inputs' dtypes.
class NoAutocast {
 public:
  NoAutocast() = default;

 private:
  c10::impl::ExcludeDispatchKeyGuard guard_{c10::autocast_dispatch_keyset};
};

}  // namespace exfusion
