// CPU token cross-entropy kernels (see cross_entropy_cpu_kernels.h). A language model's loss
// reads logits of tokens × vocabulary values: 7.6 M for the fortunes T5's step, 119 M for a
// Llama's batch of 4 × 928 tokens at 32k pieces, where ATen's route took 470 ms on 2 cores.
#include "cross_entropy_cpu_kernels.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "cpu_vectors.h"

namespace exfusion::cpu {
namespace {

constexpr int64_t kCrossEntropyRowsPerTask = 4;

EXFUSION_INLINE float row_max(const float* z, int64_t vocab) {
  Vec best = Vec{} - std::numeric_limits<float>::infinity();
  int64_t j = 0;
  for (; j + kLanes <= vocab; j += kLanes) {
    const Vec v = load(z + j);
    best = v > best ? v : best;
  }
  float result = best[0];
  for (int64_t l = 1; l < kLanes; ++l) result = std::max(result, best[l]);
  for (; j < vocab; ++j) result = std::max(result, z[j]);
  return result;
}

// Σ_j e^(z_j − shift) over the row, each exponent ≤ 0 (shift is the row's maximum).
EXFUSION_INLINE float row_exp_sum(const float* z, int64_t vocab, float shift) {
  Vec sum{};
  int64_t j = 0;
  for (; j + kLanes <= vocab; j += kLanes) {
    Vec e = load(z + j) - shift;
    exp_nonpositive(e);
    sum += e;
  }
  if (j < vocab) {
    Vec e = load_partial(z + j, vocab - j) - shift;
    exp_nonpositive(e);
    // The lanes past the row read 0 − shift: their exponentials are not the row's.
    for (int64_t l = vocab - j; l < kLanes; ++l) e[l] = 0.f;
    sum += e;
  }
  return lane_sum(sum);
}

EXFUSION_INLINE float row_sum(const float* z, int64_t vocab) {
  Vec sum{};
  int64_t j = 0;
  for (; j + kLanes <= vocab; j += kLanes) sum += load(z + j);
  if (j < vocab) sum += load_partial(z + j, vocab - j);
  return lane_sum(sum);
}

EXFUSION_SIMD_CLONES
void forward_rows(const CrossEntropyShape& s, int64_t begin, int64_t end, const float* logits,
                  const int64_t* targets, float* losses, float* log_sum_exp) {
  for (int64_t row = begin; row < end; ++row) {
    const float* z = logits + row * s.vocab;
    const float max = row_max(z, s.vocab);
    const float lse = max + std::log(row_exp_sum(z, s.vocab, max));
    log_sum_exp[row] = lse;
    const int64_t target = targets[row];
    if (target == s.ignore_index) {
      losses[row] = 0.f;
      continue;
    }
    float loss = lse - (1.f - s.label_smoothing) * z[target];
    if (s.label_smoothing != 0.f) {
      loss -= s.label_smoothing * row_sum(z, s.vocab) / static_cast<float>(s.vocab);
    }
    losses[row] = loss;
  }
}

EXFUSION_SIMD_CLONES
void backward_rows(const CrossEntropyShape& s, int64_t begin, int64_t end, const float* logits,
                   const int64_t* targets, const float* log_sum_exp, float scale,
                   float* grad_logits) {
  const float uniform = s.label_smoothing / static_cast<float>(s.vocab);
  for (int64_t row = begin; row < end; ++row) {
    const float* z = logits + row * s.vocab;
    float* grad = grad_logits + row * s.vocab;
    const int64_t target = targets[row];
    if (target == s.ignore_index) {
      std::fill_n(grad, s.vocab, 0.f);
      continue;
    }
    const float lse = log_sum_exp[row];
    int64_t j = 0;
    for (; j + kLanes <= s.vocab; j += kLanes) {
      Vec p = load(z + j) - lse;
      exp_nonpositive(p);
      store(scale * (p - uniform), grad + j);
    }
    if (j < s.vocab) {
      const int64_t n = s.vocab - j;
      Vec p = load_partial(z + j, n) - lse;
      exp_nonpositive(p);
      store_partial(scale * (p - uniform), grad + j, n);
    }
    grad[target] -= scale * (1.f - s.label_smoothing);
  }
}

}  // namespace

void cross_entropy_forward(const CrossEntropyShape& shape, const float* logits,
                           const int64_t* targets, float* losses, float* log_sum_exp) {
  at::parallel_for(0, shape.rows, kCrossEntropyRowsPerTask, [&](int64_t begin, int64_t end) {
    forward_rows(shape, begin, end, logits, targets, losses, log_sum_exp);
  });
}

void cross_entropy_backward(const CrossEntropyShape& shape, const float* logits,
                            const int64_t* targets, const float* log_sum_exp, float scale,
                            float* grad_logits) {
  at::parallel_for(0, shape.rows, kCrossEntropyRowsPerTask, [&](int64_t begin, int64_t end) {
    backward_rows(shape, begin, end, logits, targets, log_sum_exp, scale, grad_logits);
  });
}

}  // namespace exfusion::cpu
