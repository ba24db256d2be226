// EWA on a CUDA device (GPU machine only): with the same host-drawn partition, the CUDA forward,
// its gradients and Eq. (6) equal the CPU's within float32 GEMM rounding, in fp32 and under the
// bf16 autocast a CUDA run trains in.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "../support/cuda.h"
#include "exfusion/fusion/ewa_ffn.h"
#include "exfusion/util/device.h"

namespace exfusion {
namespace {

struct EwaPass {
  torch::Tensor out, up_grad, down_grad;
};

// One training forward and backward of `ffn` on `device`, the partition drawn from seed 5.
EwaPass run_on(EwaMlp ffn, const torch::Tensor& x, const torch::Device& device, bool bf16) {
  ffn->to(device);
  ffn->train();
  torch::manual_seed(5);
  torch::Tensor out;
  {
    AutocastGuard autocast(bf16);
    out = ffn->forward(x.to(device));
  }
  out.to(torch::kFloat32).pow(2).sum().backward();
  return {out.to(torch::kCPU, torch::kFloat32), ffn->fc1->weight.grad().to(torch::kCPU),
          ffn->fc2->weight.grad().to(torch::kCPU)};
}

EwaMlp fresh_ewa() {
  torch::manual_seed(3);
  return EwaMlp(64, 128, EwaOptions().num_experts(4).expert_init(ExpertInit::kIndependent));
}

TEST(EwaFfnGpu, TrainsOnCudaAsOnTheCpu) {
  REQUIRE_CUDA_KERNELS();
  torch::manual_seed(4);
  const auto x = torch::randn({8, 50, 64});
  const auto cpu = run_on(fresh_ewa(), x, torch::kCPU, false);
  const auto cuda = run_on(fresh_ewa(), x, torch::kCUDA, false);
  // fp32 GEMMs in another order (and TF32 off, LibTorch's default): 1e-4 of O(1) values.
  EXPECT_LE((cpu.out - cuda.out).abs().max().item<double>(), 1e-4);
  EXPECT_LE((cpu.up_grad - cuda.up_grad).abs().max().item<double>(), 1e-3);
  EXPECT_LE((cpu.down_grad - cuda.down_grad).abs().max().item<double>(), 1e-3);
  // bf16 autocast: 8 bits of mantissa, relative 2^-8 of the outputs' scale.
  const auto bf16 = run_on(fresh_ewa(), x, torch::kCUDA, true);
  const double scale = cpu.out.abs().max().item<double>();
  EXPECT_LE((cpu.out - bf16.out).abs().max().item<double>(), 4.0 * scale / 256.0);
}

TEST(EwaFfnGpu, AveragesOnCudaAsOnTheCpu) {
  REQUIRE_CUDA_KERNELS();
  torch::manual_seed(6);
  auto cpu = torch::randn({4, 128, 64});
  auto cuda = cpu.to(torch::kCUDA);
  average_experts_(cpu, 0.3);
  average_experts_(cuda, 0.3);
  EXPECT_LE((cpu - cuda.cpu()).abs().max().item<double>(), 1e-6);
}

}  // namespace
}  // namespace exfusion
