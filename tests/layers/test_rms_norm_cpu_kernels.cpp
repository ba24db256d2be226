// The CPU RMS norm kernels against their reference, the ATen composite (train.rms_norm_kernels
// = false): output and the gradients of x and of the weight, for T5's widths and the kernels'
// edges (a width that is no multiple of 16, one row, rows that are no multiple of a block,
// large and tiny values); grad_weight the same bit for bit at 1 and 2 threads; bf16 falls back.
#include <ATen/Parallel.h>
#include <gtest/gtest.h>

#include <tuple>

#include "exfusion/layers/rms_norm.h"
#include "exfusion/util/fast_paths.h"

namespace exfusion {
namespace {

struct NormPass {
  torch::Tensor out, grad_x, grad_weight;
  FastPathCalls calls;
};

NormPass run_norm(RMSNorm& norm, const torch::Tensor& x, const torch::Tensor& grad_out,
                  bool kernels) {
  FastPathPolicy policy;
  policy.rms_norm_kernels = kernels;
  const FastPathScope scope(policy);
  norm->zero_grad();
  const auto input = x.detach().requires_grad_();
  const auto out = norm->forward(input);
  out.backward(grad_out);
  return {out.detach(), input.grad(), norm->weight.grad().clone(),
          scope.counters()->calls(FastPath::kRmsNormKernels)};
}

// Tolerance: each value is a float32 expression over one row's sum of at most 1024 squares or
// products (grad_weight: a sum over at most 300 rows), accumulated in another order than the
// reference's: a few ulps times √terms, under 1e-5 of the largest |element|. 1e-4 of it (plus
// 1e-6) is well above that and far below a real error (a missing term or a wrong row moves
// values by a sizeable fraction of their scale).
void expect_near_reference(const torch::Tensor& actual, const torch::Tensor& expected,
                           const char* what) {
  const double difference = (actual - expected).abs().max().item<double>();
  const double scale = expected.abs().max().item<double>();
  EXPECT_LE(difference, 1e-6 + 1e-4 * scale) << what << ": scale " << scale;
}

class RmsNormKernels
    : public ::testing::TestWithParam<std::tuple<int64_t, int64_t, int64_t, double>> {};

TEST_P(RmsNormKernels, EqualTheCompositeForwardAndBackward) {
  const auto [batch, tokens, width, input_scale] = GetParam();
  torch::manual_seed(5);
  RMSNorm norm(width, 1e-6);
  {
    const torch::NoGradGuard no_grad;
    norm->weight.uniform_(0.5, 1.5);  // not ones: the weight's product must be there
  }
  const auto x = torch::randn({batch, tokens, width}) * input_scale;
  const auto grad_out = torch::randn({batch, tokens, width});
  const auto kernel = run_norm(norm, x, grad_out, true);
  const auto reference = run_norm(norm, x, grad_out, false);
  EXPECT_EQ(kernel.calls.taken, 1);
  EXPECT_EQ(kernel.calls.fell_back, 0);
  EXPECT_EQ(reference.calls.taken + reference.calls.fell_back, 0);  // switched off: not counted
  expect_near_reference(kernel.out, reference.out, "output");
  expect_near_reference(kernel.grad_x, reference.grad_x, "dL/dx");
  expect_near_reference(kernel.grad_weight, reference.grad_weight, "dL/dweight");
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, RmsNormKernels,
    ::testing::Values(std::make_tuple(4, 37, 256, 1.0),   // T5 fortunes' width; 148 rows
                      std::make_tuple(2, 5, 1024, 1.0),   // wide rows
                      std::make_tuple(1, 1, 40, 1.0),     // one row, a 16 + 16 + 8 width
                      std::make_tuple(3, 11, 7, 1.0),     // narrower than one vector
                      std::make_tuple(2, 150, 64, 1e3),   // large values, 300 rows
                      std::make_tuple(2, 9, 48, 1e-3)));  // values near eps's scale

TEST(RmsNormKernels, WeightGradientDoesNotDependOnTheThreadCount) {
  torch::manual_seed(6);
  RMSNorm norm(96, 1e-6);
  const auto x = torch::randn({8, 100, 96});
  const auto grad_out = torch::randn({8, 100, 96});
  const int threads = at::get_num_threads();
  at::set_num_threads(1);
  const auto one = run_norm(norm, x, grad_out, true);
  at::set_num_threads(2);
  const auto two = run_norm(norm, x, grad_out, true);
  at::set_num_threads(threads);
  EXPECT_TRUE(torch::equal(one.grad_weight, two.grad_weight));
  EXPECT_TRUE(torch::equal(one.grad_x, two.grad_x));
}

TEST(RmsNormKernels, OtherDtypesFallBackCounted) {
  RMSNorm norm(32, 1e-6);
  norm->to(torch::kBFloat16);
  const FastPathScope scope(FastPathPolicy{});
  const auto out = norm->forward(torch::randn({3, 32}).to(torch::kBFloat16));
  EXPECT_EQ(out.scalar_type(), torch::kBFloat16);
  const auto calls = scope.counters()->calls(FastPath::kRmsNormKernels);
  EXPECT_EQ(calls.taken, 0);
  EXPECT_EQ(calls.fell_back, 1);
}

}  // namespace
}  // namespace exfusion
