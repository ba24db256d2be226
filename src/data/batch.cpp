// Moving a batch to the training device: every tensor it holds, so a task with a second input
// sequence (an encoder-decoder's) needs no edit of the trainer or the evaluation loop.
#include "exfusion/data/batch.h"

namespace exfusion {

namespace {

torch::Tensor on_device(const torch::Tensor& tensor, const torch::Device& device) {
  return tensor.defined() ? tensor.to(device, /*non_blocking=*/true) : tensor;
}

}  // namespace

Batch Batch::to(const torch::Device& device) const {
  Batch moved = *this;
  moved.inputs = on_device(inputs, device);
  moved.targets = on_device(targets, device);
  moved.decoder_inputs = on_device(decoder_inputs, device);
  return moved;
}

}  // namespace exfusion
