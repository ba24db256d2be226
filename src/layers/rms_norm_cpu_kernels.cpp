// CPU RMS norm kernels (see rms_norm_cpu_kernels.h). T5 and Llama normalise before every
// attention and FFN; on the fortunes T5 the composite's passes over [4096, 256] took 3.8 ms
// forward and backward per norm, 83 ms of a 900 ms step, for a few MB of memory traffic.
#include "rms_norm_cpu_kernels.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "cpu_vectors.h"

namespace exfusion::cpu {
namespace {

// Rows per task, and per partial sum of grad_weight.
constexpr int64_t kRmsRowsPerBlock = 32;

// Σ a ⊙ b over a row (a == b: the sum of squares).
EXFUSION_INLINE float row_dot(const float* a, const float* b, int64_t width) {
  Vec sum{};
  int64_t i = 0;
  for (; i + kLanes <= width; i += kLanes) sum += load(a + i) * load(b + i);
  if (i < width) sum += load_partial(a + i, width - i) * load_partial(b + i, width - i);
  return lane_sum(sum);
}

EXFUSION_SIMD_CLONES
void rms_forward_rows(int64_t begin, int64_t end, int64_t width, const float* x,
                      const float* weight, float eps, float* y, float* inverse_rms) {
  for (int64_t row = begin; row < end; ++row) {
    const float* x_row = x + row * width;
    float* y_row = y + row * width;
    const float r = 1.f / std::sqrt(row_dot(x_row, x_row, width) / static_cast<float>(width) + eps);
    inverse_rms[row] = r;
    int64_t i = 0;
    for (; i + kLanes <= width; i += kLanes) {
      store(load(weight + i) * (load(x_row + i) * r), y_row + i);
    }
    if (i < width) {
      const int64_t n = width - i;
      store_partial(load_partial(weight + i, n) * (load_partial(x_row + i, n) * r), y_row + i, n);
    }
  }
}

// One block's rows: their grad_x, and their share of grad_weight into `partial` (width floats).
EXFUSION_SIMD_CLONES
void rms_backward_rows(int64_t begin, int64_t end, int64_t width, const float* x,
                       const float* weight, const float* inverse_rms, const float* grad_y,
                       float* grad_x, float* partial) {
  std::fill_n(partial, width, 0.f);
  for (int64_t row = begin; row < end; ++row) {
    const float* x_row = x + row * width;
    const float* dy_row = grad_y + row * width;
    float* dx_row = grad_x + row * width;
    const float r = inverse_rms[row];
    // Σ weight ⊙ dy ⊙ x, then the two coefficients of grad_x's terms.
    Vec sum{};
    int64_t i = 0;
    for (; i + kLanes <= width; i += kLanes) {
      sum += load(weight + i) * load(dy_row + i) * load(x_row + i);
    }
    if (i < width) {
      const int64_t n = width - i;
      sum += load_partial(weight + i, n) * load_partial(dy_row + i, n) * load_partial(x_row + i, n);
    }
    const float along_x = lane_sum(sum) * r * r * r / static_cast<float>(width);
    for (i = 0; i + kLanes <= width; i += kLanes) {
      const Vec xs = load(x_row + i), dy = load(dy_row + i);
      store(r * load(weight + i) * dy - along_x * xs, dx_row + i);
      store(load(partial + i) + dy * (xs * r), partial + i);
    }
    if (i < width) {
      const int64_t n = width - i;
      const Vec xs = load_partial(x_row + i, n), dy = load_partial(dy_row + i, n);
      store_partial(r * load_partial(weight + i, n) * dy - along_x * xs, dx_row + i, n);
      store_partial(load_partial(partial + i, n) + dy * (xs * r), partial + i, n);
    }
  }
}

}  // namespace

void rms_norm_forward(int64_t rows, int64_t width, const float* x, const float* weight, float eps,
                      float* y, float* inverse_rms) {
  at::parallel_for(0, rows, kRmsRowsPerBlock, [&](int64_t begin, int64_t end) {
    rms_forward_rows(begin, end, width, x, weight, eps, y, inverse_rms);
  });
}

void rms_norm_backward(int64_t rows, int64_t width, const float* x, const float* weight,
                       const float* inverse_rms, const float* grad_y, float* grad_x,
                       float* grad_weight) {
  const int64_t blocks = (rows + kRmsRowsPerBlock - 1) / kRmsRowsPerBlock;
  std::vector<float> partials(static_cast<size_t>(blocks * width));
  at::parallel_for(0, blocks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t block = begin; block < end; ++block) {
      rms_backward_rows(block * kRmsRowsPerBlock, std::min(rows, (block + 1) * kRmsRowsPerBlock),
                        width, x, weight, inverse_rms, grad_y, grad_x,
                        partials.data() + block * width);
    }
  });
  std::fill_n(grad_weight, width, 0.f);
  for (int64_t block = 0; block < blocks; ++block) {
    const float* partial = partials.data() + block * width;
    for (int64_t i = 0; i < width; ++i) grad_weight[i] += partial[i];
  }
}

}  // namespace exfusion::cpu
