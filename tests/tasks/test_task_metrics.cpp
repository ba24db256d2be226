// The metrics a task declares, as the trainer and evaluation report them: a per-token metric
// differs from its per-sample average on a padded batch and the trainer reports the per-token
// value; per-sample and derived metrics come beside it; a checkpoint keeps the window's sums by
// name and refuses a task that declares others.
#include <gtest/gtest.h>

#include <cmath>

#include "../support/cli.h"
#include "../support/token_task.h"
#include "exfusion/train/trainer.h"
#include "exfusion/train/training_state.h"
#include "exfusion/util/error.h"

namespace exfusion {
namespace {

constexpr int64_t kMetricVocab = 6;

// Two sequences: the first has 4 tokens, all predicted right (targets = inputs); the second 1,
// predicted wrong. Per token 4/5 are right; averaged per sample (1 + 0) / 2.
Batch padded_batch() {
  constexpr int64_t pad = testing::kPadding;
  const auto inputs = torch::tensor(std::vector<int64_t>{1, 2, 3, 4, 5, 0, 0, 0}).view({2, 4});
  const auto targets =
      torch::tensor(std::vector<int64_t>{1, 2, 3, 4, 1, pad, pad, pad}).view({2, 4});
  return {inputs, targets};
}

RunConfig config_for_tokens() {
  auto config = default_run_config();
  config.train.device = "cpu";
  config.train.precision = "fp32";
  config.train.log_every = 1;
  config.train.epochs = 1;
  config.train.lr = 1e-9;  // the step's update does not change what the window measured
  config.train.min_lr = 0.0;
  config.train.warmup_epochs = 0;
  return config;
}

// Keeps what the trainer reports.
struct Recorder : TrainerCallback {
  std::vector<TrainWindow> windows;
  std::vector<EvalResult> evaluations;
  void on_step(const Trainer& /*trainer*/, const StepEvent& event) override {
    if (event.window != nullptr) windows.push_back(*event.window);
  }
  void on_eval(const Trainer& /*trainer*/, const EvalEvent& event) override {
    evaluations.push_back(event.result);
  }
};

TEST(TaskMetrics, APerTokenMetricIsAveragedOverTokensNotSamples) {
  const auto batch = padded_batch();
  // The two averages of the same predictions, computed here from the definitions.
  const auto counted = batch.targets.ne(testing::kPadding);
  const auto right = batch.inputs.eq(batch.targets).logical_and(counted);
  const double per_token = right.sum().item<double>() / counted.sum().item<double>();  // 4 / 5
  const double per_sample =
      (right.sum(-1).to(torch::kFloat64) / counted.sum(-1).to(torch::kFloat64))
          .mean()
          .item<double>();
  ASSERT_DOUBLE_EQ(per_token, 0.8);
  ASSERT_DOUBLE_EQ(per_sample, 0.5);

  auto task = std::make_shared<testing::TokenTask>();
  auto model = std::make_shared<testing::EchoModelImpl>(kMetricVocab);
  Trainer trainer(config_for_tokens().train, model, task, torch::kCPU);
  testing::FixedBatches train({batch}), test({batch});
  Recorder recorder;
  const auto result = trainer.fit(train, test, {&recorder});

  ASSERT_EQ(recorder.windows.size(), 1U);
  const auto& window = recorder.windows.front();
  EXPECT_EQ(window.tokens, 5);
  EXPECT_EQ(window.samples, 2);
  // Exact: 4 / 5 in double either way.
  EXPECT_EQ(window.metrics.at("token_accuracy"), per_token);
  EXPECT_NE(window.metrics.at("token_accuracy"), per_sample);
  EXPECT_EQ(window.metrics.at("sequence_accuracy"), 0.5);  // a per-sample metric
  // The loss is per token too: mean over the 5 counted positions of the cross-entropy.
  const auto logits = model->forward(batch.inputs);
  const double expected_loss = at::cross_entropy_loss(logits.flatten(0, 1), batch.targets.flatten(),
                                                      {}, at::Reduction::Mean, testing::kPadding)
                                   .item<double>();
  EXPECT_NEAR(window.loss, expected_loss, 1e-6);  // the 1e-9 step moved the bias by ~1e-9
  EXPECT_NEAR(window.metrics.at("perplexity"), std::exp(window.loss), 1e-12);
  // The order is the task's: loss first, then as declared.
  ASSERT_EQ(window.metrics.items().size(), 4U);
  EXPECT_EQ(window.metrics.items()[0].first, "loss");
  EXPECT_EQ(window.metrics.items()[3].first, "perplexity");

  ASSERT_EQ(recorder.evaluations.size(), 1U);
  const auto& eval = recorder.evaluations.front();
  EXPECT_EQ(eval.sums.tokens, 5);
  EXPECT_EQ(eval.metrics.at("token_accuracy"), per_token);
  EXPECT_EQ(eval.metrics.at("sequence_accuracy"), 0.5);
  EXPECT_NEAR(eval.loss, expected_loss, 1e-6);
  EXPECT_EQ(result.last_metrics.at("token_accuracy"), per_token);
  EXPECT_NEAR(result.last_metrics.at("perplexity"), std::exp(result.last_loss), 1e-12);
}

// A checkpoint taken inside an open window keeps its sums under the task's metric names; a
// trainer of another task (image accuracy) refuses it by name.
TEST(TaskMetrics, ACheckpointKeepsTheWindowSumsByNameAndRefusesAnotherTask) {
  const auto dir = testing::fresh_temp_dir("task-metrics-state");
  auto config = config_for_tokens();
  config.train.log_every = 100;  // the window stays open after the first of two steps
  config.train.max_steps = 2;
  auto task = std::make_shared<testing::TokenTask>();
  auto model = std::make_shared<testing::EchoModelImpl>(kMetricVocab);
  Trainer trainer(config.train, model, task, torch::kCPU);
  struct SaveAfterStep : TrainerCallback {
    std::filesystem::path path;
    const RunConfig* run = nullptr;
    void on_step(const Trainer& trainer, const StepEvent& event) override {
      if (event.step == 1) trainer.state(*run).save(path);
    }
  } save;
  save.path = dir / "state.safetensors";
  save.run = &config;
  testing::FixedBatches train({padded_batch(), padded_batch(), padded_batch()}),
      test({padded_batch()});
  trainer.fit(train, test, {&save});

  const auto loaded = TrainingState::load(save.path);
  EXPECT_EQ(loaded.format, 4);
  EXPECT_EQ(loaded.progress.metric_names,
            (std::vector<std::string>{"token_accuracy", "sequence_accuracy"}));
  ASSERT_EQ(loaded.progress.window_metric_sums.size(), 2U);
  EXPECT_EQ(loaded.step, 1);
  EXPECT_EQ(loaded.progress.window_steps, 1);
  EXPECT_EQ(loaded.progress.window_tokens, 5);
  EXPECT_EQ(loaded.progress.window_metric_sums[0], 4.0);  // right tokens
  EXPECT_EQ(loaded.progress.window_metric_sums[1], 1.0);  // right sequences

  Trainer resumed(config.train, std::make_shared<testing::EchoModelImpl>(kMetricVocab), task,
                  torch::kCPU);
  resumed.restore(loaded);
  EXPECT_EQ(resumed.steps_done(), loaded.step);

  auto image_config = default_run_config();
  image_config.train.device = "cpu";
  Trainer images(image_config.train, std::make_shared<testing::EchoModelImpl>(kMetricVocab),
                 make_task(image_config), torch::kCPU);
  try {
    images.restore(loaded);
    FAIL() << "an image classification trainer took a token task's window";
  } catch (const InputError& error) {
    const std::string what = error.what();
    EXPECT_NE(what.find("token_accuracy"), std::string::npos) << what;
    EXPECT_NE(what.find("another task"), std::string::npos) << what;
  }
  testing::remove_tree(dir);
}

}  // namespace
}  // namespace exfusion
