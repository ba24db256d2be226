// The CPU depthwise grid convolution kernels against their reference, at::conv2d over the grid
// transposed to [batch, channels, side, side] (train.depthwise_conv_kernels = false), evaluated in
// float64: output and the gradients of tokens, weight and bias for every covered kernel size, a
// channel count that is no multiple of 16 and grids whose border clips the window; the same bits
// at any thread count; other dtypes fall back, counted.
#include <ATen/Parallel.h>
#include <gtest/gtest.h>

#include <tuple>

#include "exfusion/layers/depthwise_grid_conv.h"
#include "exfusion/util/fast_paths.h"

namespace exfusion {
namespace {

struct ConvPass {
  torch::Tensor out, grad_tokens, grad_weight, grad_bias;
  FastPathCalls calls;
};

ConvPass run_conv(const DepthwiseGridConv& conv, const torch::Tensor& tokens,
                  const torch::Tensor& grad_out, bool kernels, torch::Dtype dtype) {
  FastPathPolicy policy;
  policy.depthwise_conv_kernels = kernels;
  const FastPathScope scope(policy);
  auto copy = DepthwiseGridConv(conv->weight.size(0), conv->weight.size(-1));
  {
    const torch::NoGradGuard no_grad;
    copy->weight.copy_(conv->weight);
    copy->bias.copy_(conv->bias);
  }
  copy->to(dtype);
  const auto input = tokens.to(dtype).detach().requires_grad_();
  const auto out = copy->forward(input);
  out.backward(grad_out.to(dtype));
  return {out.detach(), input.grad(), copy->weight.grad(), copy->bias.grad(),
          scope.counters()->calls(FastPath::kDepthwiseConvKernels)};
}

// Tolerance: the standard bound on a float32 sum of n products in any order,
// |error| ≤ n u Σ |terms| with u = 2⁻²⁴, doubled; Σ |terms| is the same convolution in float64
// over the absolute values (tokens, weight, bias and upstream gradient), so the bound follows
// each output's own magnitude. A wrong tap or a missed border would be off by whole terms.
void expect_within_sum_bound(const torch::Tensor& kernel, const torch::Tensor& exact,
                             const torch::Tensor& magnitude, int64_t terms, const char* what) {
  const auto bound = 2.0 * static_cast<double>(terms) * std::ldexp(1.0, -24) * magnitude;
  const auto excess = (kernel.to(torch::kFloat64) - exact).abs() - bound;
  EXPECT_LE(excess.max().item<double>(), 0.0) << what;
}

class DepthwiseConvKernels : public ::testing::TestWithParam<std::tuple<int64_t, int64_t>> {
};  // kernel, side

TEST_P(DepthwiseConvKernels, EqualTheReferenceForwardAndBackward) {
  const auto [kernel, side] = GetParam();
  torch::manual_seed(5);
  const int64_t batch = 3, channels = 37;  // two full vectors of channels and a short one
  const DepthwiseGridConv conv(channels, kernel);
  {
    const torch::NoGradGuard no_grad;
    conv->bias.normal_();
  }
  const auto tokens = torch::randn({batch, side * side, channels});
  const auto grad_out = torch::randn({batch, side * side, channels});
  const auto ours = run_conv(conv, tokens, grad_out, true, torch::kFloat32);
  const auto exact = run_conv(conv, tokens, grad_out, false, torch::kFloat64);
  EXPECT_EQ(ours.calls.taken, 1);
  EXPECT_EQ(ours.calls.fell_back, 0);
  EXPECT_EQ(exact.calls.taken + exact.calls.fell_back, 0);  // switched off

  // The magnitudes: the reference over |tokens|, |weight|, |bias| and |grad_out|.
  auto absolute = DepthwiseGridConv(channels, kernel);
  {
    const torch::NoGradGuard no_grad;
    absolute->weight.copy_(conv->weight.abs());
    absolute->bias.copy_(conv->bias.abs());
  }
  const auto magnitude = run_conv(absolute, tokens.abs(), grad_out.abs(), false, torch::kFloat64);
  const int64_t taps = kernel * kernel;
  expect_within_sum_bound(ours.out, exact.out, magnitude.out, taps + 1, "output");
  expect_within_sum_bound(ours.grad_tokens, exact.grad_tokens, magnitude.grad_tokens, taps,
                          "dL/dtokens");
  const int64_t positions = batch * side * side;
  expect_within_sum_bound(ours.grad_weight, exact.grad_weight, magnitude.grad_weight, positions,
                          "dL/dweight");
  expect_within_sum_bound(ours.grad_bias, exact.grad_bias, magnitude.grad_bias, positions,
                          "dL/dbias");
}

// Kernel sizes 1, 3 (PVT v2's), 5 and 7 on grids of 1 (every tap but the centre outside), 2, 4
// and 7 tokens a side.
INSTANTIATE_TEST_SUITE_P(KernelsAndGrids, DepthwiseConvKernels,
                         ::testing::Values(std::make_tuple(1, 4), std::make_tuple(3, 1),
                                           std::make_tuple(3, 2), std::make_tuple(3, 7),
                                           std::make_tuple(5, 4), std::make_tuple(7, 7)),
                         [](const auto& info) {
                           return "kernel" + std::to_string(std::get<0>(info.param)) + "_side" +
                                  std::to_string(std::get<1>(info.param));
                         });

TEST(DepthwiseConvKernels, GiveTheSameBitsAtAnyThreadCount) {
  torch::manual_seed(6);
  const DepthwiseGridConv conv(48, 3);
  const auto tokens = torch::randn({9, 49, 48});
  const auto grad_out = torch::randn({9, 49, 48});
  const int threads = at::get_num_threads();
  at::set_num_threads(1);
  const auto one = run_conv(conv, tokens, grad_out, true, torch::kFloat32);
  for (const int count : {2, 3}) {
    at::set_num_threads(count);
    const auto many = run_conv(conv, tokens, grad_out, true, torch::kFloat32);
    EXPECT_TRUE(torch::equal(one.out, many.out)) << count << " threads";
    EXPECT_TRUE(torch::equal(one.grad_tokens, many.grad_tokens)) << count << " threads";
    EXPECT_TRUE(torch::equal(one.grad_weight, many.grad_weight)) << count << " threads";
    EXPECT_TRUE(torch::equal(one.grad_bias, many.grad_bias)) << count << " threads";
  }
  at::set_num_threads(threads);
}

TEST(DepthwiseConvKernels, OtherDtypesFallBackCounted) {
  const DepthwiseGridConv conv(8, 3);
  const auto tokens = torch::randn({2, 16, 8});
  const auto kernels = run_conv(conv, tokens, torch::ones_like(tokens), true, torch::kFloat64);
  EXPECT_EQ(kernels.calls.taken, 0);
  EXPECT_EQ(kernels.calls.fell_back, 1);
  const auto reference = run_conv(conv, tokens, torch::ones_like(tokens), false, torch::kFloat64);
  EXPECT_TRUE(torch::equal(kernels.out, reference.out));
}

}  // namespace
}  // namespace exfusion
