// CPU gated-activation kernels (see gated_activation_cpu_kernels.h). On the fortunes T5 the
// composite's gelu, multiply and their backward took 7.4 ms per encoder FFN over [4096, 512]:
// memory passes, not arithmetic, which one pass per direction saves.
#include "gated_activation_cpu_kernels.h"

#include <ATen/Parallel.h>

#include "cpu_activations.h"

namespace exfusion::cpu {
namespace {

// Floats per task: a few hundred KB of the three or five streams, in L2.
constexpr int64_t kGatedFloatsPerTask = 16384;

template <ActivationFunction function>
EXFUSION_INLINE void forward_range(int64_t begin, int64_t end, const float* gate, const float* up,
                                   float* out) {
  int64_t i = begin;
  for (; i + kLanes <= end; i += kLanes) {
    store(activation<function>(load(gate + i), nullptr) * load(up + i), out + i);
  }
  if (i < end) {
    const int64_t n = end - i;
    store_partial(
        activation<function>(load_partial(gate + i, n), nullptr) * load_partial(up + i, n), out + i,
        n);
  }
}

template <ActivationFunction function>
EXFUSION_INLINE void backward_vector(const Vec& gate, const Vec& up, const Vec& grad_out,
                                     Vec& grad_gate, Vec& grad_up) {
  Vec derivative;
  const Vec act = activation<function>(gate, &derivative);
  grad_gate = grad_out * up * derivative;
  grad_up = grad_out * act;
}

template <ActivationFunction function>
EXFUSION_INLINE void backward_range(int64_t begin, int64_t end, const float* gate, const float* up,
                                    const float* grad_out, float* grad_gate, float* grad_up) {
  int64_t i = begin;
  for (; i + kLanes <= end; i += kLanes) {
    Vec dgate, dup;
    backward_vector<function>(load(gate + i), load(up + i), load(grad_out + i), dgate, dup);
    store(dgate, grad_gate + i);
    store(dup, grad_up + i);
  }
  if (i < end) {
    const int64_t n = end - i;
    Vec dgate, dup;
    backward_vector<function>(load_partial(gate + i, n), load_partial(up + i, n),
                              load_partial(grad_out + i, n), dgate, dup);
    store_partial(dgate, grad_gate + i, n);
    store_partial(dup, grad_up + i, n);
  }
}

// The cloned entry points (target_clones takes functions, not templates).
EXFUSION_SIMD_CLONES
void gated_forward_range(ActivationFunction function, int64_t begin, int64_t end, const float* gate,
                         const float* up, float* out) {
  switch (function) {
    case ActivationFunction::kGelu:
      return forward_range<ActivationFunction::kGelu>(begin, end, gate, up, out);
    case ActivationFunction::kGeluTanh:
      return forward_range<ActivationFunction::kGeluTanh>(begin, end, gate, up, out);
    case ActivationFunction::kSilu:
      return forward_range<ActivationFunction::kSilu>(begin, end, gate, up, out);
    case ActivationFunction::kRelu:
      return forward_range<ActivationFunction::kRelu>(begin, end, gate, up, out);
  }
}
EXFUSION_SIMD_CLONES
void gated_backward_range(ActivationFunction function, int64_t begin, int64_t end,
                          const float* gate, const float* up, const float* grad_out,
                          float* grad_gate, float* grad_up) {
  switch (function) {
    case ActivationFunction::kGelu:
      return backward_range<ActivationFunction::kGelu>(begin, end, gate, up, grad_out, grad_gate,
                                                       grad_up);
    case ActivationFunction::kGeluTanh:
      return backward_range<ActivationFunction::kGeluTanh>(begin, end, gate, up, grad_out,
                                                           grad_gate, grad_up);
    case ActivationFunction::kSilu:
      return backward_range<ActivationFunction::kSilu>(begin, end, gate, up, grad_out, grad_gate,
                                                       grad_up);
    case ActivationFunction::kRelu:
      return backward_range<ActivationFunction::kRelu>(begin, end, gate, up, grad_out, grad_gate,
                                                       grad_up);
  }
}

}  // namespace

void gated_activation_forward(ActivationFunction function, int64_t count, const float* gate,
                              const float* up, float* out) {
  at::parallel_for(0, count, kGatedFloatsPerTask, [&](int64_t begin, int64_t end) {
    gated_forward_range(function, begin, end, gate, up, out);
  });
}

void gated_activation_backward(ActivationFunction function, int64_t count, const float* gate,
                               const float* up, const float* grad_out, float* grad_gate,
                               float* grad_up) {
  at::parallel_for(0, count, kGatedFloatsPerTask, [&](int64_t begin, int64_t end) {
    gated_backward_range(function, begin, end, gate, up, grad_out, grad_gate, grad_up);
  });
}

}  // namespace exfusion::cpu
