// The CPU token cross-entropy kernels against their reference, ATen's cross_entropy_loss
// (train.cross_entropy_kernels = false): the mean loss and the logits' gradient with and without
// label smoothing, ignored rows, a vocabulary that is no multiple of 16, and logits far apart;
// the loss the same at 1 and 2 threads; a target out of range refused as ATen refuses it; no
// counted row gives NaN as ATen's mean does; other dtypes fall back, counted.
#include <ATen/Parallel.h>
#include <gtest/gtest.h>

#include <tuple>

#include "exfusion/layers/cross_entropy.h"
#include "exfusion/util/fast_paths.h"

namespace exfusion {
namespace {

struct LossPass {
  torch::Tensor loss, grad;
  FastPathCalls calls;
};

LossPass run_loss(const torch::Tensor& logits, const torch::Tensor& targets, double smoothing,
                  bool kernels) {
  FastPathPolicy policy;
  policy.cross_entropy_kernels = kernels;
  const FastPathScope scope(policy);
  const auto z = logits.detach().requires_grad_();
  const auto loss = token_cross_entropy(z, targets, -100, smoothing);
  (loss * 3.0).backward();  // an incoming gradient other than 1
  return {loss.detach(), z.grad(), scope.counters()->calls(FastPath::kCrossEntropyKernels)};
}

class CrossEntropyKernels
    : public ::testing::TestWithParam<std::tuple<int64_t, int64_t, double, double>> {};

// Tolerance: the loss is a mean of per-row log Σ exp minus logits, each within a few ulps of
// the row's largest |logit| (the exponential is Cephes' within 2 ulp, the sum over at most 8192
// terms in another order): 1e-5 relative to the logits' scale is several times that. Each
// gradient value is 3/rows · (p − onehot), p within a few ulps of ATen's: within 1e-6 / rows
// plus 1e-5 of the largest |gradient|. A wrong row, term or scale is far outside both.
TEST_P(CrossEntropyKernels, EqualAtensLossAndGradient) {
  const auto [rows, vocab, smoothing, logit_scale] = GetParam();
  torch::manual_seed(11);
  const auto logits = torch::randn({rows, vocab}) * logit_scale;
  auto targets = torch::randint(0, vocab, {rows}, torch::kInt64);
  targets.slice(0, 0, rows, 5).fill_(-100);  // every fifth row ignored
  const auto kernel = run_loss(logits, targets, smoothing, true);
  const auto reference = run_loss(logits, targets, smoothing, false);
  EXPECT_EQ(kernel.calls.taken, 1);
  EXPECT_EQ(kernel.calls.fell_back, 0);
  EXPECT_EQ(reference.calls.taken + reference.calls.fell_back, 0);  // switched off
  EXPECT_NEAR(kernel.loss.item<double>(), reference.loss.item<double>(),
              1e-5 * std::max(1.0, logit_scale));
  const double difference = (kernel.grad - reference.grad).abs().max().item<double>();
  const double scale = reference.grad.abs().max().item<double>();
  EXPECT_LE(difference, 1e-6 / static_cast<double>(rows) + 1e-5 * scale);
  // Ignored rows have no gradient at all.
  EXPECT_EQ(kernel.grad.slice(0, 0, rows, 5).abs().max().item<float>(), 0.f);
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, CrossEntropyKernels,
    ::testing::Values(std::make_tuple(928, 8192, 0.0, 1.0),  // the fortunes T5's step
                      std::make_tuple(64, 1000, 0.1, 1.0),   // label smoothing, 1000 = 62·16 + 8
                      std::make_tuple(7, 37, 0.0, 30.0),     // logits far apart
                      std::make_tuple(3, 5, 0.2, 1.0)));     // narrower than one vector

TEST(CrossEntropyKernels, LossDoesNotDependOnTheThreadCount) {
  torch::manual_seed(12);
  const auto logits = torch::randn({300, 515});
  const auto targets = torch::randint(0, 515, {300}, torch::kInt64);
  const int threads = at::get_num_threads();
  at::set_num_threads(1);
  const auto one = run_loss(logits, targets, 0.0, true);
  at::set_num_threads(2);
  const auto two = run_loss(logits, targets, 0.0, true);
  at::set_num_threads(threads);
  EXPECT_TRUE(torch::equal(one.loss, two.loss));
  EXPECT_TRUE(torch::equal(one.grad, two.grad));
}

TEST(CrossEntropyKernels, RefuseATargetOutOfRangeAsAtenDoes) {
  const FastPathScope scope(FastPathPolicy{});
  const auto logits = torch::randn({2, 10});
  const auto targets = torch::tensor({3, 10}, torch::kInt64);
  try {
    token_cross_entropy(logits, targets, -100, 0.0);
    FAIL() << "a target of 10 with 10 logits was accepted";
  } catch (const c10::Error& error) {
    EXPECT_NE(std::string(error.what()).find("Target 10 is out of bounds"), std::string::npos)
        << error.what();
  }
}

TEST(CrossEntropyKernels, NoCountedRowGivesNanAsAtensMean) {
  const auto targets = torch::full({4}, -100, torch::kInt64);
  const auto kernel = run_loss(torch::randn({4, 9}), targets, 0.0, true);
  const auto reference = run_loss(torch::randn({4, 9}), targets, 0.0, false);
  EXPECT_TRUE(std::isnan(kernel.loss.item<float>()));
  EXPECT_TRUE(std::isnan(reference.loss.item<float>()));
  EXPECT_EQ(kernel.grad.abs().max().item<float>(), 0.f);
}

TEST(CrossEntropyKernels, OtherDtypesFallBackCounted) {
  const FastPathScope scope(FastPathPolicy{});
  const auto logits = torch::randn({4, 9}, torch::kFloat64);
  const auto targets = torch::randint(0, 9, {4}, torch::kInt64);
  const auto loss = token_cross_entropy(logits, targets, -100, 0.0);
  EXPECT_EQ(loss.scalar_type(), torch::kFloat64);
  const auto calls = scope.counters()->calls(FastPath::kCrossEntropyKernels);
  EXPECT_EQ(calls.taken, 0);
  EXPECT_EQ(calls.fell_back, 1);
}

}  // namespace
}  // namespace exfusion
