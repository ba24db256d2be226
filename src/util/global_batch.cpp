// global_batch_mean and its scope (see global_batch.h). The backward is an autograd node of our
// own that holds the forward's reducer, so it reaches the other ranks from any autograd thread.
#include "exfusion/util/global_batch.h"

#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/functions/utils.h>

#include <utility>

namespace exfusion {
namespace {

thread_local std::shared_ptr<CrossRankMean> current_mean;

// d local = mean over ranks of d global: every rank's loss depends on the global statistic.
struct GlobalBatchMeanBackward : torch::autograd::Node {
  explicit GlobalBatchMeanBackward(std::shared_ptr<CrossRankMean> reducer)
      : mean(std::move(reducer)) {}
  torch::autograd::variable_list apply(torch::autograd::variable_list&& grads) override {
    auto grad = grads.at(0).defined() ? grads[0].clone() : grads[0];
    if (grad.defined()) mean->mean_(grad);
    return {grad};
  }
  std::string name() const override { return "GlobalBatchMeanBackward"; }

  std::shared_ptr<CrossRankMean> mean;
};

}  // namespace

GlobalBatchScope::GlobalBatchScope(std::shared_ptr<CrossRankMean> mean)
    : previous_(std::exchange(current_mean, std::move(mean))) {}

GlobalBatchScope::~GlobalBatchScope() { current_mean = std::move(previous_); }

const std::shared_ptr<CrossRankMean>& GlobalBatchScope::current() { return current_mean; }

torch::Tensor global_batch_mean(const torch::Tensor& local_mean) {
  const auto& mean = GlobalBatchScope::current();
  if (!mean) return local_mean;
  auto global = local_mean.detach().clone();
  mean->mean_(global);
  if (local_mean.requires_grad() && torch::GradMode::is_enabled()) {
    auto node = std::make_shared<GlobalBatchMeanBackward>(mean);
    node->set_next_edges(torch::autograd::collect_next_edges(local_mean));
    torch::autograd::set_history(global, node);
  }
  return global;
}

GlobalBatchPlace global_batch_place() {
  const auto& mean = GlobalBatchScope::current();
  if (!mean) return {};
  return {mean->rank(), mean->ranks()};
}

}  // namespace exfusion
