// Entry points of the CPU RMS norm kernels (rms_norm_cpu_kernels.cpp): one pass over a row for
// the forward, one for the backward, where the ATen composite (rms_norm.cpp's reference, which
// they are tested against) makes five or six over the whole tensor in each direction.
#pragma once
#include <cstdint>

namespace exfusion::cpu {

// y = weight ⊙ x · r per row of `width` floats, r = 1/√(mean(x²) + eps), kept in inverse_rms.
void rms_norm_forward(int64_t rows, int64_t width, const float* x, const float* weight, float eps,
                      float* y, float* inverse_rms);

// grad_x = r (weight ⊙ dy) − x r³/width · Σ weight ⊙ dy ⊙ x per row, and grad_weight =
// Σ_rows dy ⊙ x r, summed in blocks of rows whose partial sums are added in a fixed order: the
// result does not depend on the thread count.
void rms_norm_backward(int64_t rows, int64_t width, const float* x, const float* weight,
                       const float* inverse_rms, const float* grad_y, float* grad_x,
                       float* grad_weight);

}  // namespace exfusion::cpu
