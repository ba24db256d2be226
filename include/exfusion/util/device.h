// Where and in which precision a run computes: `auto` picks CUDA when present, and bf16
// autocast on CUDA (fp32 on CPU, where bf16 GEMMs are slower than fp32 ones).
#pragma once
#include <torch/types.h>

#include <string>

namespace exfusion {

torch::Device resolve_device(const std::string& name);  // auto, cpu, cuda, cuda:N
bool use_bf16(const std::string& precision, const torch::Device& device);

// bf16 autocast for the forward pass on CUDA while alive; a no-op when disabled.
class AutocastGuard {
 public:
  explicit AutocastGuard(bool enabled);
  ~AutocastGuard();
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;

 private:
  bool enabled_;
  bool was_enabled_ = false;
};

}  // namespace exfusion
