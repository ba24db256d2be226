// LayerNorm on the CPU: the ATen reference against LibTorch's layer_norm and its autograd,
// layer_norm() as LibTorch's LayerNorm, and the LayerNorm module against torch::nn::LayerNorm
// (the CUDA kernels against the reference: test_layer_norm_gpu.cpp).
#include <gtest/gtest.h>
#include <torch/nn/modules/normalization.h>
#include <torch/types.h>

#include <memory>
#include <string>
#include <vector>

#include "../support/layer_norms.h"
#include "exfusion/layers/layer_norm.h"

namespace exfusion {
namespace {

constexpr double kLayerNormFloat64Tolerance = 1e-10;

TEST(LayerNormReference, ForwardMatchesAtLayerNorm) {
  torch::manual_seed(0);
  const auto x = torch::randn({3, 5, 24}, torch::kFloat64) * 3 + 1;
  const auto gamma = torch::randn({24}, torch::kFloat64);
  const auto beta = torch::randn({24}, torch::kFloat64);
  const auto [y, mean, rstd] =
      reference::layer_norm_forward(x, gamma, beta, testing::kLayerNormEps, torch::kFloat64);
  const auto [want_y, want_mean, want_rstd] =
      at::native_layer_norm(x, {24}, gamma, beta, testing::kLayerNormEps);
  EXPECT_TRUE(torch::allclose(y, want_y, 0, kLayerNormFloat64Tolerance));
  EXPECT_TRUE(torch::allclose(mean, want_mean.reshape({-1}), 0, kLayerNormFloat64Tolerance));
  EXPECT_TRUE(torch::allclose(rstd, want_rstd.reshape({-1}), 0, kLayerNormFloat64Tolerance));
}

TEST(LayerNormReference, BackwardMatchesAutogradThroughAtLayerNorm) {
  torch::manual_seed(1);
  const auto x = (torch::randn({4, 6, 20}, torch::kFloat64) * 2).requires_grad_();
  const auto gamma = torch::randn({20}, torch::kFloat64).requires_grad_();
  const auto beta = torch::randn({20}, torch::kFloat64).requires_grad_();
  const auto dy = torch::randn({4, 6, 20}, torch::kFloat64);
  at::layer_norm(x, {20}, gamma, beta, testing::kLayerNormEps).backward(dy);
  const auto [y, mean, rstd] = reference::layer_norm_forward(
      x.detach(), gamma.detach(), beta.detach(), testing::kLayerNormEps, torch::kFloat64);
  const auto [dx, dgamma, dbeta] =
      reference::layer_norm_backward(dy, x.detach(), mean, rstd, gamma.detach());
  EXPECT_TRUE(torch::allclose(dx, x.grad(), 0, kLayerNormFloat64Tolerance));
  EXPECT_TRUE(torch::allclose(dgamma, gamma.grad(), 0, kLayerNormFloat64Tolerance));
  EXPECT_TRUE(torch::allclose(dbeta, beta.grad(), 0, kLayerNormFloat64Tolerance));
}

TEST(LayerNorm, IsLibTorchsOnTheCpu) {
  torch::manual_seed(2);
  auto norm = testing::make_norm(16, torch::kFloat32, torch::kCPU);
  const auto x = torch::randn({2, 3, 16});
  EXPECT_TRUE(torch::equal(layer_norm(x, norm), norm->forward(x)));
}

// exfusion::LayerNorm: torch::nn::LayerNorm's parameters (names, order, ones and zeros), eps
// and numbers, forward and backward.
TEST(LayerNormModule, IsTorchsLayerNorm) {
  torch::nn::LayerNorm theirs(torch::nn::LayerNormOptions({12}).eps(1e-6));
  LayerNorm ours(LayerNormOptions(12).eps(1e-6));
  const auto our_params = ours->named_parameters();
  const auto their_params = theirs->named_parameters();
  ASSERT_EQ(our_params.keys(), (std::vector<std::string>{"weight", "bias"}));
  ASSERT_EQ(our_params.keys(), their_params.keys());
  for (const auto& item : their_params) {
    EXPECT_TRUE(torch::equal(our_params[item.key()], item.value())) << item.key();
  }
  torch::manual_seed(6);
  {
    torch::NoGradGuard no_grad;
    for (const auto& item : their_params) {
      item.value().normal_();
      our_params[item.key()].copy_(item.value());
    }
  }
  const auto x = torch::randn({2, 3, 12}) * 3;
  const auto y = ours->forward(x);
  EXPECT_TRUE(torch::equal(y, theirs->forward(x)));
  y.square().sum().backward();
  theirs->forward(x).square().sum().backward();
  for (const auto& item : their_params) {
    EXPECT_TRUE(torch::equal(our_params[item.key()].grad(), item.value().grad())) << item.key();
  }
}

TEST(LayerNormModule, DefaultsToTorchsEps) {
  EXPECT_EQ(LayerNorm(8)->options.eps(), torch::nn::LayerNormOptions({8}).eps());
}

TEST(LayerNormModule, ClonesItsParameters) {
  LayerNorm ours(4);
  const auto copy = std::dynamic_pointer_cast<LayerNormImpl>(ours->clone());
  ASSERT_NE(copy, nullptr);
  EXPECT_TRUE(torch::equal(copy->weight, ours->weight));
  EXPECT_NE(copy->weight.data_ptr(), ours->weight.data_ptr());
}

}  // namespace
}  // namespace exfusion
