// Entry points of the CPU token cross-entropy kernels (cross_entropy_cpu_kernels.cpp): the loss
// of each row of logits in two passes over it, and its gradient in one more, where ATen's
// cross_entropy_loss (the reference they are tested against) writes the whole log-softmax,
// zero-fills and scatters the NLL gradient, and reads both again in its backward.
#pragma once
#include <cstdint>

namespace exfusion::cpu {

struct CrossEntropyShape {
  int64_t rows = 0, vocab = 0;
  int64_t ignore_index = -100;  // a target equal to it: the row counts for nothing
  float label_smoothing = 0.f;
};

// Each row's loss log Σ exp z − (1 − ε) z_target − ε mean(z) (0 for an ignored row) into
// `losses`, and its log Σ exp z into `log_sum_exp`. A target outside [0, vocab) other than
// ignore_index is the caller's to refuse.
void cross_entropy_forward(const CrossEntropyShape& shape, const float* logits,
                           const int64_t* targets, float* losses, float* log_sum_exp);

// grad_logits = scale · (softmax(z) − (1 − ε) onehot(target) − ε / vocab) per row, zeros for
// an ignored row.
void cross_entropy_backward(const CrossEntropyShape& shape, const float* logits,
                            const int64_t* targets, const float* log_sum_exp, float scale,
                            float* grad_logits);

}  // namespace exfusion::cpu
