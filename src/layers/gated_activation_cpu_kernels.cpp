// CPU gated-activation kernels (see gated_activation_cpu_kernels.h). On the fortunes T5 the
// composite's gelu, multiply and their backward took 7.4 ms per encoder FFN over [4096, 512]:
// memory passes, not arithmetic, which one pass per direction saves.
#include "gated_activation_cpu_kernels.h"

#include <ATen/Parallel.h>

#include "cpu_vectors.h"

namespace exfusion::cpu {
namespace {

// Floats per task: a few hundred KB of the three or five streams, in L2.
constexpr int64_t kGatedFloatsPerTask = 16384;

constexpr float kSqrtTwoOverPi = 0.7978845608028654f;
constexpr float kGeluCubic = 0.044715f;

// act(x) and, where `derivative` is given, act'(x), for one vector. Both through σ and 1 − σ
// (cpu_vectors.h), which do not cancel: tanh GELU's 0.5 x (1 + tanh u) is x σ(2u), and its
// 1 − tanh² u is 4 σ(2u) σ(−2u).
template <GatingFunction function>
EXFUSION_INLINE Vec activation(const Vec& x, Vec* derivative) {
  Vec s, complement;
  if constexpr (function == GatingFunction::kGeluTanh) {
    // u = √(2/π)(x + 0.044715 x³); act = x σ(2u); act' = σ(2u) + x σ(2u) σ(−2u) 2u'.
    const Vec x2 = x * x;
    sigmoid_pair(2.f * kSqrtTwoOverPi * (x + kGeluCubic * x2 * x), s, complement);
    if (derivative) {
      *derivative = s + x * s * complement * (2.f * kSqrtTwoOverPi) * (1.f + 3.f * kGeluCubic * x2);
    }
    return x * s;
  } else {
    // x σ(x); its derivative σ(x)(1 + x σ(−x)).
    sigmoid_pair(x, s, complement);
    if (derivative) *derivative = s * (1.f + x * complement);
    return x * s;
  }
}

template <GatingFunction function>
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

template <GatingFunction function>
EXFUSION_INLINE void backward_vector(const Vec& gate, const Vec& up, const Vec& grad_out,
                                     Vec& grad_gate, Vec& grad_up) {
  Vec derivative;
  const Vec act = activation<function>(gate, &derivative);
  grad_gate = grad_out * up * derivative;
  grad_up = grad_out * act;
}

template <GatingFunction function>
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
void gelu_tanh_forward_range(int64_t begin, int64_t end, const float* gate, const float* up,
                             float* out) {
  forward_range<GatingFunction::kGeluTanh>(begin, end, gate, up, out);
}
EXFUSION_SIMD_CLONES
void silu_forward_range(int64_t begin, int64_t end, const float* gate, const float* up,
                        float* out) {
  forward_range<GatingFunction::kSilu>(begin, end, gate, up, out);
}
EXFUSION_SIMD_CLONES
void gelu_tanh_backward_range(int64_t begin, int64_t end, const float* gate, const float* up,
                              const float* grad_out, float* grad_gate, float* grad_up) {
  backward_range<GatingFunction::kGeluTanh>(begin, end, gate, up, grad_out, grad_gate, grad_up);
}
EXFUSION_SIMD_CLONES
void silu_backward_range(int64_t begin, int64_t end, const float* gate, const float* up,
                         const float* grad_out, float* grad_gate, float* grad_up) {
  backward_range<GatingFunction::kSilu>(begin, end, gate, up, grad_out, grad_gate, grad_up);
}

}  // namespace

void gated_activation_forward(GatingFunction function, int64_t count, const float* gate,
                              const float* up, float* out) {
  at::parallel_for(0, count, kGatedFloatsPerTask, [&](int64_t begin, int64_t end) {
    const auto range =
        function == GatingFunction::kGeluTanh ? gelu_tanh_forward_range : silu_forward_range;
    range(begin, end, gate, up, out);
  });
}

void gated_activation_backward(GatingFunction function, int64_t count, const float* gate,
                               const float* up, const float* grad_out, float* grad_gate,
                               float* grad_up) {
  at::parallel_for(0, count, kGatedFloatsPerTask, [&](int64_t begin, int64_t end) {
    const auto range =
        function == GatingFunction::kGeluTanh ? gelu_tanh_backward_range : silu_backward_range;
    range(begin, end, gate, up, grad_out, grad_gate, grad_up);
  });
}

}  // namespace exfusion::cpu
