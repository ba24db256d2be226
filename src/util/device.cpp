// Device and precision selection (see device.h).
#include "exfusion/util/device.h"

#include <ATen/autocast_mode.h>
#include <torch/cuda.h>

#include "exfusion/util/error.h"
#include "exfusion/util/json_input.h"

namespace exfusion {

torch::Device resolve_device(const std::string& name) {
  const auto quoted = brief_json(name);
  if (name == "auto") return torch::cuda::is_available() ? torch::kCUDA : torch::kCPU;
  torch::Device device(torch::kCPU);
  try {
    device = torch::Device(name);
  } catch (const c10::Error&) {
    throw InputError("train.device = " + quoted + ": expected auto, cpu, cuda or cuda:N");
  }
  if (device.is_cuda() && !torch::cuda::is_available()) {
    throw InputError("train.device = " + quoted + ": no CUDA device is available here");
  }
  if (!device.is_cuda() && !device.is_cpu()) {
    throw InputError("train.device = " + quoted + ": expected auto, cpu, cuda or cuda:N");
  }
  return device;
}

bool use_bf16(const std::string& precision, const torch::Device& device) {
  if (precision == "auto") return device.is_cuda();
  if (precision == "bf16" && !device.is_cuda()) {
    throw InputError("train.precision = \"bf16\": bf16 autocast needs a CUDA device");
  }
  return precision == "bf16";
}

AutocastGuard::AutocastGuard(bool enabled) : enabled_(enabled) {
  if (!enabled_) return;
  was_enabled_ = at::autocast::is_autocast_enabled(at::kCUDA);
  at::autocast::set_autocast_dtype(at::kCUDA, at::kBFloat16);
  at::autocast::set_autocast_enabled(at::kCUDA, true);
}

AutocastGuard::~AutocastGuard() {
  if (!enabled_) return;
  at::autocast::set_autocast_enabled(at::kCUDA, was_enabled_);
  if (!was_enabled_) at::autocast::clear_cache();
}

}  // namespace exfusion
