// The CPU attention kernels for short sequences against their reference,
// at::scaled_dot_product_attention (train.attention_kernels=false): outputs and the gradients
// of x and of both linears, for the main job's shape and the kernels' edges (several tasks of
// 16 heads, the last one short; one full task; one token; an odd head width; 64 tokens at head
// width 128; scores far apart); a longer sequence falls back, and is counted so.
#include <gtest/gtest.h>

#include <tuple>

#include "exfusion/layers/attention.h"
#include "exfusion/util/fast_paths.h"

namespace exfusion {
namespace {

struct Pass {
  torch::Tensor out, grad_x, grad_qkv_weight, grad_proj_weight;
  FastPathCalls calls;
};

Pass run(Attention& attention, const torch::Tensor& x, const torch::Tensor& grad_out,
         bool kernels) {
  FastPathPolicy policy;
  policy.attention_kernels = kernels;
  const FastPathScope scope(policy);
  attention->zero_grad();
  const auto input = x.detach().requires_grad_();
  const auto out = attention->forward(input);
  out.backward(grad_out);
  return {out.detach(), input.grad(), attention->qkv->weight.grad().clone(),
          attention->proj->weight.grad().clone(),
          scope.counters()->calls(FastPath::kAttentionKernels)};
}

// Tolerances: each output and gradient element is a float32 sum of at most 64 · 128 products,
// accumulated in another order than the reference's, so its error scales with the largest
// terms, not with the element (sums that cancel): max |difference| within 1e-5 plus 1e-4 of
// the largest |element| is several hundred float32 ulps of such sums, and far below any real
// error (a wrong index or a missing term moves values by a sizeable fraction of their scale).
void expect_close(const torch::Tensor& actual, const torch::Tensor& expected, const char* what) {
  const double difference = (actual - expected).abs().max().item<double>();
  const double scale = expected.abs().max().item<double>();
  EXPECT_LE(difference, 1e-5 + 1e-4 * scale) << what << ": scale " << scale;
}

class AttentionKernels
    : public ::testing::TestWithParam<std::tuple<int64_t, int64_t, int64_t, int64_t>> {};

void expect_equal_to_reference(int64_t batch, int64_t tokens, int64_t heads, int64_t head_dim,
                               double input_scale) {
  torch::manual_seed(3);
  Attention attention(heads * head_dim, heads);
  const auto x = torch::randn({batch, tokens, heads * head_dim}) * input_scale;
  const auto grad_out = torch::randn({batch, tokens, heads * head_dim});
  const auto kernel = run(attention, x, grad_out, true);
  const auto reference = run(attention, x, grad_out, false);
  EXPECT_EQ(kernel.calls.taken, 1);
  EXPECT_EQ(reference.calls.taken + reference.calls.fell_back, 0);  // switched off: not counted
  expect_close(kernel.out, reference.out, "output");
  expect_close(kernel.grad_x, reference.grad_x, "dL/dx");
  expect_close(kernel.grad_qkv_weight, reference.grad_qkv_weight, "dL/d qkv.weight");
  expect_close(kernel.grad_proj_weight, reference.grad_proj_weight, "dL/d proj.weight");
}

TEST_P(AttentionKernels, EqualTheReferenceForwardAndBackward) {
  const auto [batch, tokens, heads, head_dim] = GetParam();
  expect_equal_to_reference(batch, tokens, heads, head_dim, 1.0);
}

INSTANTIATE_TEST_SUITE_P(Shapes, AttentionKernels,
                         ::testing::Values(std::make_tuple(3, 17, 4, 32),  // the main job's
                                           std::make_tuple(9, 17, 4, 32),  // 36 heads: 3 tasks
                                           std::make_tuple(4, 17, 4, 16),  // 1 full task
                                           std::make_tuple(2, 1, 1, 8),    // one token
                                           std::make_tuple(2, 5, 3, 7),    // odd width
                                           std::make_tuple(2, 64, 2, 128)  // the largest covered
                                           ));

// Inputs 200 times larger make the scores of a row hundreds apart: most probabilities are
// below e^-87 and the exponential's underflow branch gives them 0, as their true value is
// under 2^-125. Full tasks (the transposing copies) and a short one. Scores this large make the
// gradients ill-conditioned (a score's rounding moves its probability by 1e-5 of itself), so
// both float32 results are held to the float64 reference: the kernels' error at most 4 times
// the reference's own float32 error, plus 1e-5 of the scale.
TEST(AttentionKernels, ScoresFarApartAreAsAccurateAsTheReference) {
  torch::manual_seed(3);
  Attention attention(4 * 32, 4);
  const auto x = torch::randn({5, 17, 4 * 32}) * 200.0;
  const auto grad_out = torch::randn({5, 17, 4 * 32});
  const auto kernel = run(attention, x, grad_out, true);
  const auto reference = run(attention, x, grad_out, false);
  EXPECT_EQ(kernel.calls.taken, 1);
  attention->to(torch::kFloat64);
  const auto exact = run(attention, x.to(torch::kFloat64), grad_out.to(torch::kFloat64), false);
  const auto error = [](const torch::Tensor& value, const torch::Tensor& truth) {
    return (value.to(torch::kFloat64) - truth).abs().max().item<double>();
  };
  const std::vector<std::tuple<const char*, torch::Tensor, torch::Tensor, torch::Tensor>> checks = {
      {"output", kernel.out, reference.out, exact.out},
      {"dL/dx", kernel.grad_x, reference.grad_x, exact.grad_x},
      {"dL/d qkv.weight", kernel.grad_qkv_weight, reference.grad_qkv_weight, exact.grad_qkv_weight},
      {"dL/d proj.weight", kernel.grad_proj_weight, reference.grad_proj_weight,
       exact.grad_proj_weight}};
  for (const auto& [what, ours, theirs, truth] : checks) {
    const double scale = truth.abs().max().item<double>();
    EXPECT_LE(error(ours, truth), 4 * error(theirs, truth) + 1e-5 * scale)
        << what << ": reference's error " << error(theirs, truth) << ", scale " << scale;
  }
}

TEST(AttentionKernels, ALongerSequenceFallsBackToTheReferenceAndIsCounted) {
  torch::manual_seed(4);
  Attention attention(64, 2);
  const auto x = torch::randn({2, 65, 64});
  const auto grad_out = torch::randn({2, 65, 64});
  const auto fallback = run(attention, x, grad_out, true);
  const auto reference = run(attention, x, grad_out, false);
  EXPECT_EQ(fallback.calls.taken, 0);
  EXPECT_EQ(fallback.calls.fell_back, 1);
  EXPECT_TRUE(torch::equal(fallback.out, reference.out));
  EXPECT_TRUE(torch::equal(fallback.grad_x, reference.grad_x));
}

TEST(AttentionKernels, RunWithoutGradientsAsInEvaluation) {
  torch::manual_seed(5);
  Attention attention(32, 2);
  const auto x = torch::randn({4, 9, 32});
  torch::Tensor kernel, reference;
  {
    const c10::InferenceMode inference;
    kernel = attention->forward(x);
    FastPathPolicy off;
    off.attention_kernels = false;
    const FastPathScope scope(off);
    reference = attention->forward(x);
  }
  expect_close(kernel, reference, "output in inference mode");
}

}  // namespace
}  // namespace exfusion
