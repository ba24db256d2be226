// A sequence task and model that live only in the tests: token ids in, one prediction per
// position, padding (-100) in the targets, a loss and a token accuracy averaged per token, a
// sequence accuracy per sample and perplexity derived from the loss. They show that the
// trainer, evaluation and checkpoints handle what a task declares, not image accuracy.
#pragma once
#include <torch/nn/modules/embedding.h>

#include <cmath>
#include <utility>
#include <vector>

#include "exfusion/tasks/task.h"

namespace exfusion::testing {

inline constexpr int64_t kPadding = -100;

// Batches given in advance, in order; each batch's tokens are counted as a data source would.
class FixedBatches : public BatchSource {
 public:
  explicit FixedBatches(std::vector<Batch> batches) : batches_(std::move(batches)) {
    for (auto& batch : batches_) batch.tokens = batch.targets.ne(kPadding).sum().item<int64_t>();
  }
  int64_t batches_per_epoch() const override { return static_cast<int64_t>(batches_.size()); }
  int64_t size() const override {
    int64_t samples = 0;
    for (const auto& batch : batches_) samples += batch.size();
    return samples;
  }
  void start_epoch(int64_t /*epoch*/, int64_t skip_batches) override { next_ = skip_batches; }
  std::optional<Batch> next() override {
    if (next_ >= batches_per_epoch()) return std::nullopt;
    return batches_[static_cast<size_t>(next_++)];
  }

 private:
  std::vector<Batch> batches_;
  int64_t next_ = 0;
};

class TokenTask : public Task {
 public:
  TaskData load_data(DataSection& /*data*/, const ModelOptions& /*model*/,
                     bool /*with_train*/) const override {
    throw std::logic_error("TokenTask: the tests give it batches directly");
  }
  const TaskMetrics& metrics() const override {
    static const TaskMetrics declared{
        Averaging::kPerToken,
        {{"token_accuracy", Averaging::kPerToken, true, true, "tok acc"},
         {"sequence_accuracy", Averaging::kPerSample, true, true, "seq acc"},
         {"perplexity", Averaging::kDerived, false, false, "ppl"}},
        "perplexity",
        "sequences",
        "seq"};
    return declared;
  }
  torch::Tensor loss(const torch::Tensor& outputs, const Batch& batch) const override {
    return at::cross_entropy_loss(outputs.to(torch::kFloat32).flatten(0, 1),
                                  batch.targets.flatten(), {}, at::Reduction::Mean, kPadding);
  }
  torch::Tensor metric_sums(const torch::Tensor& outputs, const Batch& batch) const override {
    const auto counted = batch.targets.ne(kPadding);
    const auto right = outputs.detach().argmax(-1).eq(batch.targets).logical_and(counted);
    // A sequence is right when every counted position is.
    const auto sequences = right.eq(counted).all(-1);
    return torch::stack({right.sum(), sequences.sum()}).to(torch::kFloat64);
  }
  Batch synthetic_batch(const ModelOptions& model, int64_t batch_size) const override {
    const auto length = model.input_shapes().front().front();
    return {torch::randint(0, model.num_outputs(), {batch_size, length}),
            torch::randint(0, model.num_outputs(), {batch_size, length})};
  }
  void derive(MetricValues& values) const override {
    values.set("perplexity", std::exp(values.at("loss")));
  }
  torch::Tensor eval_loss_sum(const torch::Tensor& outputs, const Batch& batch) const override {
    return at::cross_entropy_loss(outputs.flatten(0, 1), batch.targets.flatten(), {},
                                  at::Reduction::Sum, kPadding);
  }
  double tokens_per_sample(const ModelOptions& model) const override {
    return static_cast<double>(model.input_shapes().front().front());
  }
};

// Logits = scale · one_hot(input token) + bias: at the start (bias zero) each position predicts
// its own input token, so which predictions are right is set by the targets alone.
class EchoModelImpl : public ModelImpl {
 public:
  explicit EchoModelImpl(int64_t vocab, double scale = 10.0) : vocab_(vocab), scale_(scale) {
    bias_ = register_parameter("bias", torch::zeros({vocab}));
  }
  torch::Tensor forward(const torch::Tensor& inputs) override {
    return scale_ * torch::one_hot(inputs, vocab_).to(torch::kFloat32) + bias_;
  }

 private:
  int64_t vocab_;
  double scale_;
  torch::Tensor bias_;
};

}  // namespace exfusion::testing
