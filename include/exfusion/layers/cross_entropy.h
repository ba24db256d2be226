// The mean token cross-entropy of a language model's logits, as at::cross_entropy_loss with
// Reduction::Mean computes it (rows whose target is ignore_index count for nothing; label
// smoothing as PyTorch defines it): float32 logits on the CPU go through kernels of our own
// (train.cross_entropy_kernels, counted as a fast path), everything else through ATen's.
#pragma once
#include <torch/types.h>

#include <cstdint>

namespace exfusion {

// logits [rows, vocab], targets [rows] (int64).
torch::Tensor token_cross_entropy(const torch::Tensor& logits, const torch::Tensor& targets,
                                  int64_t ignore_index, double label_smoothing);

}  // namespace exfusion
