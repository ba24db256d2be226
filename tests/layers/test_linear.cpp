// Linear layers: the autograd node behind linear()'s CUDA path against at::linear and its
// autograd (on the CPU, where the node's weight/bias gradient is the ATen reference), the
// Linear module against torch::nn::Linear, and on
// the GPU machine the cuBLASLt bias-gradient epilogue against a float64 reference and a short
// training run with and without it (without a CUDA device those tests say so and skip).
#include <gtest/gtest.h>
#include <torch/cuda.h>
#include <torch/nn/modules/linear.h>
#include <torch/types.h>

#include <ATen/autocast_mode.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "../support/cuda.h"
#include "../support/tiny_models.h"
#include "../support/trajectory.h"
#include "exfusion/fusion/expert_kernels.h"
#include "exfusion/layers/linear.h"
#include "exfusion/train/trainer.h"
#ifdef EXFUSION_WITH_CUDA_KERNELS
#include "../../src/layers/cublaslt_weight_grad.h"
#endif

namespace exfusion {
namespace {

constexpr double kFloat64Tolerance = 1e-12;
// bf16 values one rounding apart: 2^-8 relative, on gradients of magnitude ~sqrt(rows).
constexpr double kBf16Tolerance = 1.0 / 64;

struct Grads {
  torch::Tensor y, dx, dweight, dbias;
};

// Forward and backward of `f` on fresh leaves sharing x's, weight's and bias's storage (a
// view keeps its offset), with a fixed output gradient.
template <typename F>
Grads run(F f, const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias,
          const torch::Tensor& dy) {
  const auto xl = x.detach().requires_grad_(true);
  const auto wl = weight.detach().requires_grad_(true);
  const auto bl = bias.detach().requires_grad_(true);
  const auto y = f(xl, wl, bl);
  y.backward(dy.to(y.scalar_type()));
  return {y.detach(), xl.grad(), wl.grad(), bl.grad()};
}

double max_abs_diff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.to(torch::kFloat64) - b.to(torch::kFloat64)).abs().max().item<double>();
}

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
  EXPECT_LT(max_abs_diff(got.y, expected.y), kFloat64Tolerance);
  EXPECT_LT(max_abs_diff(got.dx, expected.dx), kFloat64Tolerance);
  EXPECT_LT(max_abs_diff(got.dweight, expected.dweight), kFloat64Tolerance);
  EXPECT_LT(max_abs_diff(got.dbias, expected.dbias), kFloat64Tolerance);
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
    EXPECT_NEAR(dbias[o].item<double>(), dy.select(1, o).sum().item<double>(), kFloat64Tolerance);
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

#ifdef EXFUSION_WITH_CUDA_KERNELS
// dW and db from the epilogue GEMM against float64 sums of the same (rounded) inputs. float32
// outputs are checked to float32 accumulation accuracy, which a bf16 GEMM output would miss.
class LinearEpilogueCuda : public ::testing::TestWithParam<
                               std::tuple<int64_t, int64_t, int64_t, torch::Dtype, torch::Dtype>> {
};

TEST_P(LinearEpilogueCuda, MatchesFloat64Sums) {
  REQUIRE_CUDA_KERNELS();
  const auto [rows, in, out, input_dtype, output_dtype] = GetParam();
  torch::manual_seed(4);
  const auto options = torch::TensorOptions().device(torch::kCUDA);
  const auto dy = torch::randn({rows, out}, options).to(input_dtype);
  const auto x = torch::randn({rows, in}, options).to(input_dtype);
  auto dweight = torch::full({out, in}, 7.0, options.dtype(output_dtype));
  auto dbias = torch::full({out}, 7.0, options.dtype(output_dtype));
  ASSERT_TRUE(cuda::linear_weight_bias_grad_cublaslt(dy, x, dweight, dbias))
      << "cuBLASLt offered no algorithm";
  const auto dy64 = dy.to(torch::kFloat64);
  const auto x64 = x.to(torch::kFloat64);
  const auto expected_dweight = dy64.t().mm(x64);
  const auto expected_dbias = dy64.sum(0);
  // Sums of `rows` products of unit-variance values, so errors scale with sqrt(rows). Tensor
  // cores accumulate float32 with truncating adds: 5e-4 · sqrt(rows) covers that, while a
  // bf16 output would miss it by rounding values of up to 4 · sqrt(rows) to 2^-8 relative.
  // A bf16 output is allowed that rounding: half an ulp, at most 2^-8 of the largest value.
  const double accumulation = 5e-4 * std::sqrt(static_cast<double>(rows));
  const bool rounded_to_16_bits = output_dtype != torch::kFloat32;
  const auto tolerance = [accumulation, rounded_to_16_bits](const torch::Tensor& expected) {
    if (!rounded_to_16_bits) return accumulation;
    return expected.abs().max().item<double>() / 256 + accumulation;
  };
  EXPECT_LT(max_abs_diff(dweight, expected_dweight), tolerance(expected_dweight));
  EXPECT_LT(max_abs_diff(dbias, expected_dbias), tolerance(expected_dbias));
}

INSTANTIATE_TEST_SUITE_P(
    ShapesAndDtypes, LinearEpilogueCuda,
    ::testing::Values(
        std::make_tuple(int64_t{25216}, int64_t{768}, int64_t{3072}, torch::kBFloat16,
                        torch::kFloat32),  // ViT-B/16 b128 fc1
        std::make_tuple(int64_t{50432}, int64_t{192}, int64_t{576}, torch::kBFloat16,
                        torch::kBFloat16),  // DeiT-Ti b256 qkv, bf16 fused weights
        std::make_tuple(int64_t{37}, int64_t{24}, int64_t{40}, torch::kFloat16, torch::kFloat32),
        std::make_tuple(int64_t{64}, int64_t{32}, int64_t{16}, torch::kFloat32, torch::kFloat32)));

// Through linear() on CUDA in a bf16 autocast region: the same output as at::linear, the
// gradients within bf16 rounding of at::linear's autograd. The input is a bf16 3-D view two
// bytes off its allocation, which the node hands to cuBLASLt as it is.
TEST(LinearEpilogueCudaNode, FollowsAtLinearUnderAutocast) {
  REQUIRE_CUDA_KERNELS();
  torch::manual_seed(5);
  const auto options = torch::TensorOptions().device(torch::kCUDA);
  constexpr int64_t kElements = int64_t{4} * 13 * 31;
  const auto x = torch::randn({kElements + 1}, options.dtype(torch::kBFloat16))
                     .narrow(0, 1, kElements)
                     .view({4, 13, 31});
  ASSERT_NE(reinterpret_cast<std::uintptr_t>(x.data_ptr()) % 16, 0U);
  const auto weight = torch::randn({9, 31}, options);
  const auto bias = torch::randn({9}, options);
  const auto dy = torch::randn({4, 13, 9}, options);
  const auto in_autocast = [](auto f) {
    return [f](const auto& a, const auto& w, const auto& b) {
      at::autocast::set_autocast_enabled(at::kCUDA, true);
      auto y = f(a, w, b);
      at::autocast::set_autocast_enabled(at::kCUDA, false);
      at::autocast::clear_cache();
      return y;
    };
  };
  const auto got =
      run(in_autocast([](const auto& a, const auto& w, const auto& b) {
            auto y = linear(a, w, b);
            EXPECT_NE(y.grad_fn()->name().find("LinearWithBiasGradEpilogue"), std::string::npos);
            return y;
          }),
          x, weight, bias, dy);
  const auto expected = run(
      in_autocast([](const auto& a, const auto& w, const auto& b) { return at::linear(a, w, b); }),
      x, weight, bias, dy);
  EXPECT_TRUE(torch::equal(got.y, expected.y));
  EXPECT_LT(max_abs_diff(got.dx, expected.dx), kBf16Tolerance);
  EXPECT_LT(max_abs_diff(got.dweight, expected.dweight), kBf16Tolerance * 8);
  EXPECT_LT(max_abs_diff(got.dbias, expected.dbias), kBf16Tolerance * 8);
}

// Four steps of a small ViT with ExFusion-mb on the GPU in float32, with and without the
// epilogue: the same trajectory up to float32 summation order.
testing::NamedParams train_params(bool bias_grad_epilogue) {
  auto config = testing::tiny_training_config("cuda");
  config.train.bias_grad_epilogue = bias_grad_epilogue;
  return testing::train_tiny_vit(config, 4);
}

TEST(LinearEpilogueCudaNode, TrainingFollowsAtLinear) {
  REQUIRE_CUDA_KERNELS();
  const auto with_epilogue = train_params(true);
  const auto without = train_params(false);
  EXPECT_LT(testing::max_param_diff(with_epilogue, without), testing::kTrajectoryTolerance);
}
#endif

}  // namespace
}  // namespace exfusion
