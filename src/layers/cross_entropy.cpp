// Mean token cross-entropy (see cross_entropy.h): the autograd node over the CPU kernels of
// cross_entropy_cpu_kernels, and the choice between them and ATen's cross_entropy_loss.
#include "exfusion/layers/cross_entropy.h"

#include <torch/csrc/autograd/custom_function.h>

#include <limits>

#include "cross_entropy_cpu_kernels.h"
#include "exfusion/util/fast_paths.h"

namespace exfusion {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

struct CrossEntropyOnCpu : public torch::autograd::Function<CrossEntropyOnCpu> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& logits,
                               const torch::Tensor& targets, int64_t ignore_index,
                               double label_smoothing) {
    const auto z = logits.contiguous();
    const auto t = targets.contiguous();
    const cpu::CrossEntropyShape shape{z.size(0), z.size(1), ignore_index,
                                       static_cast<float>(label_smoothing)};
    // ATen's message for a target it cannot index.
    const auto* target = t.data_ptr<int64_t>();
    int64_t counted = 0;
    for (int64_t row = 0; row < shape.rows; ++row) {
      if (target[row] == ignore_index) continue;
      TORCH_CHECK(target[row] >= 0 && target[row] < shape.vocab, "Target ", target[row],
                  " is out of bounds.");
      ++counted;
    }
    auto losses = torch::empty({shape.rows}, z.options());
    auto log_sum_exp = torch::empty({shape.rows}, z.options());
    cpu::cross_entropy_forward(shape, z.data_ptr<float>(), target, losses.data_ptr<float>(),
                               log_sum_exp.data_ptr<float>());
    // Summed in order, in double: the same loss whatever the thread count.
    double sum = 0;
    const auto* loss = losses.data_ptr<float>();
    for (int64_t row = 0; row < shape.rows; ++row) sum += loss[row];
    ctx->save_for_backward({z, t, log_sum_exp});
    ctx->saved_data["ignore_index"] = ignore_index;
    ctx->saved_data["label_smoothing"] = label_smoothing;
    ctx->saved_data["counted"] = counted;
    // No counted row: 0 / 0, NaN, as ATen's mean gives.
    const double mean =
        counted > 0 ? sum / static_cast<double>(counted) : std::numeric_limits<double>::quiet_NaN();
    return torch::full({}, mean, z.options());
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto& z = saved[0];
    const auto& t = saved[1];
    const auto& log_sum_exp = saved[2];
    const cpu::CrossEntropyShape shape{
        z.size(0), z.size(1), ctx->saved_data["ignore_index"].toInt(),
        static_cast<float>(ctx->saved_data["label_smoothing"].toDouble())};
    const auto counted = ctx->saved_data["counted"].toInt();
    const float scale = counted > 0 ? grads[0].item<float>() / static_cast<float>(counted) : 0.f;
    auto grad_logits = torch::empty_like(z);
    cpu::cross_entropy_backward(shape, z.data_ptr<float>(), t.data_ptr<int64_t>(),
                                log_sum_exp.data_ptr<float>(), scale,
                                grad_logits.data_ptr<float>());
    return {grad_logits, torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

torch::Tensor token_cross_entropy(const torch::Tensor& logits, const torch::Tensor& targets,
                                  int64_t ignore_index, double label_smoothing) {
  if (FastPathScope::policy().cross_entropy_kernels && logits.is_cpu()) {
    const bool covered = logits.dim() == 2 && logits.scalar_type() == torch::kFloat32 &&
                         targets.dim() == 1 && targets.scalar_type() == torch::kInt64 &&
                         targets.size(0) == logits.size(0) && logits.size(1) > 0;
    count_fast_path_call(FastPath::kCrossEntropyKernels, covered);
    if (covered) return CrossEntropyOnCpu::apply(logits, targets, ignore_index, label_smoothing);
  }
  return at::cross_entropy_loss(logits, targets, {}, at::Reduction::Mean, ignore_index,
                                label_smoothing);
}

}  // namespace exfusion
