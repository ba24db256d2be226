// Linear layers on the CPU: the autograd node behind linear()'s CUDA path against at::linear
// and its autograd (here the node's weight/bias gradient is the ATen reference), and the
// Linear module against torch::nn::Linear. The cuBLASLt epilogue itself runs on the GPU
// machine (test_linear_gpu.cpp).
#include <gtest/gtest.h>
#include <torch/nn/modules/linear.h>
#include <torch/types.h>

#include <ATen/autocast_mode.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "../support/linear_grads.h"
#include "exfusion/layers/linear.h"

namespace exfusion {
namespace {

using testing::max_abs_diff;
using testing::run;

constexpr double kLinearFloat64Tolerance = 1e-12;
// bf16 values one rounding apart: 2^-8 relative, on gradients of magnitude ~sqrt(rows).
constexpr double kBf16Tolerance = 1.0 / 64;

TEST(Linear, NodeMatchesAtLinearAndItsAutogradInFloat64) {
  torch::manual_seed(0);
  const auto options = torch::TensorOptions().dtype(torch::kFloat64);
  const auto x = torch::randn({3, 5, 7}, options);
  const auto weight = torch::randn({4, 7}, options);
  const auto bias = torch::randn({4}, options);
  const auto dy = torch::randn({3, 5, 4}, options);
  const auto expected =
      run([](const auto& a, const auto& w, const auto& b) { return at::linear(a, w, b); }, x,
          weight, bias, dy);
  const auto got = run(linear_with_bias_grad_epilogue, x, weight, bias, dy);
  EXPECT_LT(max_abs_diff(got.y, expected.y), kLinearFloat64Tolerance);
  EXPECT_LT(max_abs_diff(got.dx, expected.dx), kLinearFloat64Tolerance);
  EXPECT_LT(max_abs_diff(got.dweight, expected.dweight), kLinearFloat64Tolerance);
  EXPECT_LT(max_abs_diff(got.dbias, expected.dbias), kLinearFloat64Tolerance);
  EXPECT_EQ(got.dx.sizes(), x.sizes());
}

// Under autocast the node casts as at::linear's autocast rule does: bf16 output, and
// gradients in each leaf's own dtype (float32 here).
TEST(Linear, NodeFollowsAutocast) {
  torch::manual_seed(1);
  const auto x = torch::randn({6, 16});
  const auto weight = torch::randn({8, 16});
  const auto bias = torch::randn({8});
  const auto dy = torch::randn({6, 8});
  const auto autocast = [](auto f) {
    return [f](const auto& a, const auto& w, const auto& b) {
      at::autocast::set_autocast_enabled(at::kCPU, true);
      at::autocast::set_autocast_dtype(at::kCPU, at::kBFloat16);
      auto y = f(a, w, b);
      at::autocast::set_autocast_enabled(at::kCPU, false);
      at::autocast::clear_cache();
      return y;
    };
  };
  const auto expected =
      run(autocast([](const auto& a, const auto& w, const auto& b) { return at::linear(a, w, b); }),
          x, weight, bias, dy);
  const auto got = run(autocast([](const auto& a, const auto& w, const auto& b) {
                         return linear_with_bias_grad_epilogue(a, w, b);
                       }),
                       x, weight, bias, dy);
  EXPECT_EQ(got.y.scalar_type(), torch::kBFloat16);
  EXPECT_TRUE(torch::equal(got.y, expected.y));
  for (const auto& grad : {got.dx, got.dweight, got.dbias}) {
    EXPECT_EQ(grad.scalar_type(), torch::kFloat32);
  }
  EXPECT_LT(max_abs_diff(got.dx, expected.dx), kBf16Tolerance);
  EXPECT_LT(max_abs_diff(got.dweight, expected.dweight), kBf16Tolerance);
  EXPECT_LT(max_abs_diff(got.dbias, expected.dbias), kBf16Tolerance);
}

TEST(Linear, NodeComputesOnlyTheGradientsAsked) {
  torch::manual_seed(2);
  const auto x = torch::randn({5, 3});
  const auto weight = torch::randn({2, 3}, torch::requires_grad());
  const auto bias = torch::randn({2}, torch::requires_grad());
  linear_with_bias_grad_epilogue(x, weight, bias).sum().backward();
  EXPECT_FALSE(x.grad().defined());
  EXPECT_TRUE(torch::allclose(bias.grad(), torch::full({2}, 5.0)));
  EXPECT_TRUE(torch::allclose(weight.grad(), x.sum(0).expand({2, 3})));
}

TEST(Linear, NodeRejectsShapesThatDoNotFit) {
  const auto x = torch::randn({5, 3});
  try {
    linear_with_bias_grad_epilogue(x, torch::randn({2, 4}), torch::randn({2}));
    FAIL() << "expected an error";
  } catch (const c10::Error& error) {
    EXPECT_NE(std::string(error.what()).find("do not fit together"), std::string::npos);
  }
}

// On the CPU linear() is at::linear: the node would buy nothing there.
TEST(Linear, OnTheCpuLinearIsAtLinear) {
  const auto x = torch::randn({5, 3});
  const auto weight = torch::randn({2, 3}, torch::requires_grad());
  const auto bias = torch::randn({2}, torch::requires_grad());
  const auto y = linear(x, weight, bias);
  EXPECT_EQ(y.grad_fn()->name().find("LinearWithBiasGradEpilogue"), std::string::npos);
  EXPECT_TRUE(torch::equal(y, at::linear(x, weight, bias)));
}

TEST(LinearReference, WeightAndBiasGradientsAreDyTransposedXAndRowSums) {
  torch::manual_seed(3);
  const auto dy = torch::randn({9, 4}, torch::kFloat64);
  const auto x = torch::randn({9, 6}, torch::kFloat64);
  const auto [dweight, dbias] =
      reference::linear_weight_bias_grad(dy, x, torch::kFloat32, torch::kFloat64);
  EXPECT_EQ(dweight.scalar_type(), torch::kFloat32);
  EXPECT_EQ(dbias.scalar_type(), torch::kFloat64);
  for (int64_t o = 0; o < 4; ++o) {
    EXPECT_NEAR(dbias[o].item<double>(), dy.select(1, o).sum().item<double>(),
                kLinearFloat64Tolerance);
    for (int64_t i = 0; i < 6; ++i) {
      EXPECT_NEAR(dweight[o][i].item<double>(),
                  (dy.select(1, o) * x.select(1, i)).sum().item<double>(), 1e-5);
    }
  }
}

// exfusion::Linear draws its parameters as torch::nn::Linear does, from the same random stream
// and under the same names, so swapping one for the other changes no number anywhere.
void expect_same_as_libtorchs(bool bias) {
  torch::manual_seed(11);
  torch::nn::Linear theirs(torch::nn::LinearOptions(7, 5).bias(bias));
  const auto their_next = torch::rand({3});
  torch::manual_seed(11);
  Linear ours(LinearOptions(7, 5).bias(bias));
  const auto our_next = torch::rand({3});
  EXPECT_TRUE(torch::equal(our_next, their_next)) << "the random stream moved on differently";

  const auto our_params = ours->named_parameters();
  const auto their_params = theirs->named_parameters();
  ASSERT_EQ(our_params.keys(), their_params.keys());
  const std::vector<std::string> names =
      bias ? std::vector<std::string>{"weight", "bias"} : std::vector<std::string>{"weight"};
  EXPECT_EQ(our_params.keys(), names);
  for (const auto& item : their_params) {
    EXPECT_TRUE(torch::equal(our_params[item.key()], item.value())) << item.key();
    EXPECT_TRUE(our_params[item.key()].requires_grad()) << item.key();
  }
  EXPECT_EQ(ours->weight.sizes(), (std::vector<int64_t>{5, 7}));
  EXPECT_EQ(ours->bias.defined(), bias);

  const auto x = torch::randn({2, 3, 7});
  const auto y = ours->forward(x);
  EXPECT_TRUE(torch::equal(y, theirs->forward(x)));
  y.sum().backward();
  theirs->forward(x).sum().backward();
  for (const auto& item : their_params) {
    EXPECT_TRUE(torch::equal(our_params[item.key()].grad(), item.value().grad())) << item.key();
  }
}

TEST(LinearModule, IsTorchsLinearWithABias) { expect_same_as_libtorchs(true); }

TEST(LinearModule, IsTorchsLinearWithoutABias) { expect_same_as_libtorchs(false); }

TEST(LinearModule, ClonesItsParameters) {
  Linear ours(3, 2);
  const auto copy = std::dynamic_pointer_cast<LinearImpl>(ours->clone());
  ASSERT_NE(copy, nullptr);
  EXPECT_TRUE(torch::equal(copy->weight, ours->weight));
  EXPECT_NE(copy->weight.data_ptr(), ours->weight.data_ptr());
}

}  // namespace
}  // namespace exfusion
