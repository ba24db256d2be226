// The CPU attention kernels against their references. Through the ViT's self-attention module,
// against at::scaled_dot_product_attention (train.attention_kernels=false): outputs and the
// gradients of x and of both linears, for the main job's shape and the kernels' edges (several
// tasks of 16 heads, the last one short; one full task; one token; an odd head width; the
// largest blocks; scores far apart); a longer sequence falls back, and is counted so. Through
// multi_head_attention, against attention written out in float64: an additive term shared by the
// batch or one per window, with its gradient (T5, Swin); causal masks (T5's and Llama's
// decoders), also with fewer queries than keys; queries and keys of different lengths from
// different rows (T5's cross-attention, PVT's reduced keys); q, k and v columns that leave
// others in their rows; and dropout, which the kernels do not take, falling back.
#include <ATen/Parallel.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <tuple>
#include <vector>

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
                         ::testing::Values(std::make_tuple(3, 17, 4, 32),   // the main job's
                                           std::make_tuple(9, 17, 4, 32),   // 36 heads: 3 tasks
                                           std::make_tuple(4, 17, 4, 16),   // 1 full task
                                           std::make_tuple(2, 1, 1, 8),     // one token
                                           std::make_tuple(2, 5, 3, 7),     // odd width
                                           std::make_tuple(2, 64, 2, 128),  // widest heads
                                           std::make_tuple(2, 128, 2, 64),  // largest block
                                           std::make_tuple(2, 256, 3, 32)   // most tokens
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
  const auto x = torch::randn({5, 17, 128}) * 200.0;
  const auto grad_out = torch::randn({5, 17, 128});
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
  const auto x = torch::randn({2, 257, 64});
  const auto grad_out = torch::randn({2, 257, 64});
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

// One call of multi_head_attention and the gradients of its three inputs.
struct Call {
  torch::Tensor query_rows, key_value_rows, additive;  // additive may be undefined
  int64_t query_column = 0, key_column = 0, value_column = 0;
  AttentionOptions options;
};

struct Result {
  torch::Tensor out, grad_query_rows, grad_key_value_rows, grad_additive;
  FastPathCalls calls;
};

Result attend(const Call& call, const torch::Tensor& grad_out, bool kernels, bool training = true) {
  FastPathPolicy policy;
  policy.attention_kernels = kernels;
  const FastPathScope scope(policy);
  const auto queries = call.query_rows.detach().clone().requires_grad_();
  const bool packed = call.key_value_rows.is_same(call.query_rows);
  const auto key_values = packed ? queries : call.key_value_rows.detach().clone().requires_grad_();
  auto options = call.options;
  if (call.additive.defined()) options.additive = call.additive.detach().clone().requires_grad_();
  const auto out = multi_head_attention(
      {queries, call.query_column, key_values, call.key_column, call.value_column}, options,
      training);
  out.backward(grad_out);
  return {out.detach(), queries.grad(), packed ? torch::Tensor() : key_values.grad(),
          options.additive.defined() ? options.additive.grad() : torch::Tensor(),
          scope.counters()->calls(FastPath::kAttentionKernels)};
}

// The definition, in float64: per head, softmax(scale q kᵀ + additive[b mod P] (+ −∞ after the
// last key a causal query sees)) v.
torch::Tensor written_out(const torch::Tensor& query_rows, const torch::Tensor& key_value_rows,
                          const torch::Tensor& additive, const Call& call) {
  const auto& o = call.options;
  const auto batch = query_rows.size(0), queries = query_rows.size(1);
  const auto keys = key_value_rows.size(1);
  const auto heads = [&](const torch::Tensor& rows, int64_t column) {
    return rows.narrow(2, column, o.heads * o.head_dim)
        .reshape({batch, -1, o.heads, o.head_dim})
        .permute({0, 2, 1, 3});
  };
  auto scores = torch::matmul(heads(query_rows, call.query_column),
                              heads(key_value_rows, call.key_column).transpose(2, 3)) *
                o.scale;
  if (additive.defined()) {
    const auto period = additive.size(0);
    scores = scores + additive.repeat({batch / period, 1, 1, 1});
  }
  if (o.causal) {
    for (int64_t i = 0; i < queries; ++i) {
      for (int64_t j = i + keys - queries + 1; j < keys; ++j) {
        scores.select(2, i).select(2, j).fill_(-std::numeric_limits<double>::infinity());
      }
    }
  }
  return torch::matmul(torch::softmax(scores, -1), heads(key_value_rows, call.value_column))
      .permute({0, 2, 1, 3})
      .reshape({batch, queries, o.heads * o.head_dim});
}

Result reference(const Call& call, const torch::Tensor& grad_out) {
  const auto f64 = [](const torch::Tensor& t) {
    return t.defined() ? t.detach().to(torch::kFloat64).requires_grad_() : t;
  };
  const auto queries = f64(call.query_rows);
  const bool packed = call.key_value_rows.is_same(call.query_rows);
  const auto key_values = packed ? queries : f64(call.key_value_rows);
  const auto additive = f64(call.additive);
  const auto out = written_out(queries, key_values, additive, call);
  out.backward(grad_out.to(torch::kFloat64));
  return {out.detach(),
          queries.grad(),
          packed ? torch::Tensor() : key_values.grad(),
          additive.defined() ? additive.grad() : torch::Tensor(),
          {}};
}

void expect_equal_to_written_out(const Call& call, bool expect_kernels = true) {
  const auto out_shape = std::vector<int64_t>{call.query_rows.size(0), call.query_rows.size(1),
                                              call.options.heads * call.options.head_dim};
  const auto grad_out = torch::randn(out_shape);
  const auto truth = reference(call, grad_out);
  for (const bool kernels : {true, false}) {
    const auto result = attend(call, grad_out, kernels);
    SCOPED_TRACE(kernels ? "kernels" : "fallback");
    if (kernels) {
      EXPECT_EQ(result.calls.taken, expect_kernels ? 1 : 0);
      EXPECT_EQ(result.calls.fell_back, expect_kernels ? 0 : 1);
    }
    expect_close(result.out, truth.out.to(torch::kFloat32), "output");
    expect_close(result.grad_query_rows, truth.grad_query_rows.to(torch::kFloat32), "dL/d q rows");
    if (truth.grad_key_value_rows.defined()) {
      expect_close(result.grad_key_value_rows, truth.grad_key_value_rows.to(torch::kFloat32),
                   "dL/d kv rows");
    }
    if (truth.grad_additive.defined()) {
      ASSERT_TRUE(result.grad_additive.defined());
      expect_close(result.grad_additive, truth.grad_additive.to(torch::kFloat32), "dL/d additive");
    }
  }
}

Call packed_self_attention(int64_t batch, int64_t tokens, int64_t heads, int64_t head_dim) {
  Call call;
  const auto inner = heads * head_dim;
  call.query_rows = torch::randn({batch, tokens, 3 * inner});
  call.key_value_rows = call.query_rows;
  call.key_column = inner, call.value_column = 2 * inner;
  call.options.heads = heads, call.options.head_dim = head_dim;
  call.options.scale = 1.0 / std::sqrt(static_cast<double>(head_dim));
  return call;
}

// T5's encoder: a position bias shared by the batch, with its gradient, and no scaling; 8 heads
// make a task of 16 pairs span two batch elements that add into the same bias slice.
TEST(AttentionKernels, AnAdditiveTermSharedByTheBatchAndItsGradient) {
  torch::manual_seed(11);
  auto call = packed_self_attention(5, 40, 8, 16);
  call.options.scale = 1.0;
  call.additive = torch::randn({1, 8, 40, 40});
  expect_equal_to_written_out(call);
}

// The bias's gradient sums over the batch in fixed groups of tasks: the same bits at 1, 2 and 3
// threads (GPU machines' CPUs have many).
TEST(AttentionKernels, TheAdditiveGradientDoesNotDependOnTheThreadCount) {
  torch::manual_seed(18);
  auto call = packed_self_attention(9, 33, 8, 16);  // 72 pairs: 5 tasks
  call.additive = torch::randn({1, 8, 33, 33});
  const auto grad_out = torch::randn({9, 33, 128});
  const int threads = at::get_num_threads();
  std::vector<Result> results;
  for (const int count : {1, 2, 3}) {
    at::set_num_threads(count);
    results.push_back(attend(call, grad_out, true));
  }
  at::set_num_threads(threads);
  for (size_t i = 1; i < results.size(); ++i) {
    EXPECT_TRUE(torch::equal(results[i].grad_additive, results[0].grad_additive));
    EXPECT_TRUE(torch::equal(results[i].grad_query_rows, results[0].grad_query_rows));
  }
}

// Swin's shifted windows: one bias per head plus one mask per window of an image (−100 where
// windows meet), 4 windows × 3 images, 49 tokens (7 × 7), 3 heads: slices repeat every 4
// batch elements, and tasks of 16 pairs cut across windows and images.
TEST(AttentionKernels, AnAdditiveTermPerWindowRepeatingOverTheImages) {
  torch::manual_seed(12);
  auto call = packed_self_attention(12, 49, 3, 32);
  const auto bias = torch::randn({1, 3, 49, 49});
  const auto mask = torch::where(torch::rand({4, 1, 49, 49}) < 0.3, -100.0, 0.0);
  call.additive = bias + mask;
  expect_equal_to_written_out(call);
}

// T5's decoder: the future masked, with the position bias; 29 tokens leave a short last block
// of score rows, and each row sees a different number of keys.
TEST(AttentionKernels, ACausalMaskWithABias) {
  torch::manual_seed(13);
  auto call = packed_self_attention(3, 29, 5, 8);
  call.options.causal = true;
  call.additive = torch::randn({1, 5, 29, 29});
  expect_equal_to_written_out(call);
}

// Fewer queries than keys (a continuation after cached keys): query i sees the keys up to
// i + keys − queries.
TEST(AttentionKernels, ACausalMaskWithFewerQueriesThanKeys) {
  torch::manual_seed(14);
  Call call;
  call.query_rows = torch::randn({2, 7, 64});
  call.key_value_rows = torch::randn({2, 19, 128});
  call.value_column = 64;  // 4 heads × 16
  call.options.heads = 4, call.options.head_dim = 16, call.options.scale = 0.25;
  call.options.causal = true;
  expect_equal_to_written_out(call);
}

// T5's cross-attention and PVT's reduced attention: queries from one linear, keys and values
// from another, of another length; here the q columns sit in the middle of wider rows, whose
// other columns must get a zero gradient.
TEST(AttentionKernels, QueriesAndKeysFromDifferentRowsOfDifferentLengths) {
  torch::manual_seed(15);
  Call call;
  call.query_rows = torch::randn({6, 29, 3 + 6 * 8 + 5});
  call.query_column = 3;
  call.key_value_rows = torch::randn({6, 70, 96});
  call.key_column = 48, call.value_column = 0;  // values first, 6 heads × 8
  call.options.heads = 6, call.options.head_dim = 8, call.options.scale = 0.3;
  expect_equal_to_written_out(call);
  const auto result = attend(call, torch::randn({6, 29, 48}), true);
  EXPECT_TRUE(torch::equal(result.grad_query_rows.narrow(2, 0, 3), torch::zeros({6, 29, 3})));
  EXPECT_TRUE(torch::equal(result.grad_query_rows.narrow(2, 51, 5), torch::zeros({6, 29, 5})));
}

// Sizes past the kernels' (more keys than kAttentionMaxTokens) fall back, counted, to the
// composite, which the written-out definition holds too.
TEST(AttentionKernels, MoreKeysThanTheKernelsTakeFallBackWithTheTerm) {
  torch::manual_seed(16);
  Call call;
  call.query_rows = torch::randn({2, 5, 16});
  call.key_value_rows = torch::randn({2, 300, 32});
  call.key_column = 0, call.value_column = 16;
  call.options.heads = 2, call.options.head_dim = 8, call.options.scale = 0.35;
  call.additive = torch::randn({1, 2, 5, 300});
  expect_equal_to_written_out(call, /*expect_kernels=*/false);
}

// Dropout on the probabilities is not in the kernels: a training call with it falls back, an
// evaluation call (no dropout in effect) does not.
TEST(AttentionKernels, DropoutInTrainingFallsBack) {
  torch::manual_seed(17);
  auto call = packed_self_attention(2, 9, 2, 8);
  call.options.dropout = 0.1;
  const auto grad_out = torch::randn({2, 9, 16});
  EXPECT_EQ(attend(call, grad_out, true, /*training=*/true).calls.fell_back, 1);
  EXPECT_EQ(attend(call, grad_out, true, /*training=*/false).calls.taken, 1);
}

}  // namespace
}  // namespace exfusion
