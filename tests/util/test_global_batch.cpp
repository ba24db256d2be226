// global_batch_mean: the identity outside a scope; inside one, the mean over "ranks" (a fake
// reducer holding the other rank's values) in the forward and the mean of the gradients in the
// backward, checked against the one-process gradient of the same global statistic.
#include <gtest/gtest.h>

#include "exfusion/util/global_batch.h"

namespace exfusion {
namespace {

// Two ranks in one process: the other rank's tensor is fixed; mean_ averages with it and
// records how often it was called (forward and backward each once).
class TwoRankMean : public CrossRankMean {
 public:
  explicit TwoRankMean(std::vector<torch::Tensor> other) : other_(std::move(other)) {}
  void mean_(torch::Tensor& tensor) override { tensor.add_(other_.at(calls_++)).div_(2); }
  int64_t rank() const override { return 0; }
  int64_t ranks() const override { return 2; }
  int calls() const { return calls_; }

 private:
  std::vector<torch::Tensor> other_;
  int calls_ = 0;
};

TEST(GlobalBatchPlace, IsRankZeroOfOneOutsideAScopeAndTheReducersInside) {
  EXPECT_EQ(global_batch_place().rank, 0);
  EXPECT_EQ(global_batch_place().ranks, 1);
  const GlobalBatchScope scope(std::make_shared<TwoRankMean>(std::vector<torch::Tensor>{}));
  EXPECT_EQ(global_batch_place().rank, 0);
  EXPECT_EQ(global_batch_place().ranks, 2);
}

TEST(GlobalBatchMean, IsTheIdentityOutsideAScope) {
  const auto x = torch::tensor({1.0, 2.0}, torch::requires_grad());
  const auto y = global_batch_mean(x);
  EXPECT_TRUE(y.is_same(x));
}

TEST(GlobalBatchMean, AveragesOverRanksAndTheirGradients) {
  // This rank's local mean w = mean(a), the other rank's is fixed at [3, 5]; the loss on each
  // rank is sum(c · w_global) with c = [2, 7] here and [4, 1] on the other rank.
  const auto a = torch::tensor({{1.0, 2.0}, {3.0, 4.0}}, torch::requires_grad());
  const auto other_w = torch::tensor({3.0, 5.0});
  const auto other_grad = torch::tensor({4.0, 1.0});
  auto reducer = std::make_shared<TwoRankMean>(std::vector<torch::Tensor>{other_w, other_grad});
  torch::Tensor global;
  {
    const GlobalBatchScope scope(reducer);
    global = global_batch_mean(a.mean(0));
    (global * torch::tensor({2.0, 7.0})).sum().backward();
  }
  EXPECT_TRUE(torch::allclose(global, (torch::tensor({2.0, 3.0}) + other_w) / 2));
  EXPECT_EQ(reducer->calls(), 2);
  // d w_local = mean of the ranks' dL/dw_global = ([2, 7] + [4, 1]) / 2; through mean(0), a
  // half of it for each row of a.
  const auto expected = ((torch::tensor({2.0, 7.0}) + other_grad) / 2 / 2).expand({2, 2});
  EXPECT_TRUE(torch::allclose(a.grad(), expected)) << a.grad();
}

TEST(GlobalBatchMean, ScopesNestAndRestore) {
  auto outer = std::make_shared<TwoRankMean>(std::vector<torch::Tensor>{});
  auto inner = std::make_shared<TwoRankMean>(std::vector<torch::Tensor>{});
  EXPECT_EQ(GlobalBatchScope::current(), nullptr);
  {
    const GlobalBatchScope a(outer);
    {
      const GlobalBatchScope b(inner);
      EXPECT_EQ(GlobalBatchScope::current(), inner);
    }
    EXPECT_EQ(GlobalBatchScope::current(), outer);
  }
  EXPECT_EQ(GlobalBatchScope::current(), nullptr);
}

}  // namespace
}  // namespace exfusion
