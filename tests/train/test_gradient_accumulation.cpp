// Gradient accumulation (train.accumulation_steps): a step over two half batches moves the
// parameters as one step over the whole batch (ExFusion-sw, whose fusion depends on no batch
// statistic, so its banks take the factored and the ordinary gradient path in turn), for
// AdamW and AdamWScale; an epoch's incomplete last step is left out; data parallelism refuses it.
#include <gtest/gtest.h>

#include <vector>

#include "../support/token_task.h"
#include "../support/trajectory.h"
#include "exfusion/util/error.h"

namespace exfusion {
namespace {

std::vector<Batch> image_batches(const VisionTransformerOptions& m, int count, int64_t size) {
  torch::manual_seed(11);
  std::vector<Batch> batches;
  for (int i = 0; i < count; ++i) {
    batches.push_back({torch::randn({size, m.in_chans, m.img_size, m.img_size}),
                       torch::randint(0, m.num_classes, {size})});
  }
  return batches;
}

struct Run {
  testing::NamedParams params;
  TrainResult result;
};

Run fit(RunConfig config, std::vector<Batch> batches) {
  torch::manual_seed(7);
  auto model = build_model(config.model, config.ffn);
  Trainer trainer(config.train, model, make_task(config), torch::kCPU);
  const auto test_batch = batches.front();
  testing::FixedBatches train(std::move(batches)), test({test_batch});
  const auto result = trainer.fit(train, test, {});
  return {testing::trained_params(model), result};
}

RunConfig accumulation_config(UpdateRule rule) {
  auto config = default_run_config();
  testing::use_vit(config, testing::tiny_vit("exfusion", FusionVariant::kStatic, 2));
  config.train.epochs = 1;
  config.train.warmup_epochs = 0;
  config.train.lr = 1e-2;
  config.train.optimizer = rule;
  config.train.log_every = 1;
  config.train.precision = "fp32";
  return config;
}

class GradientAccumulation : public ::testing::TestWithParam<UpdateRule> {};

TEST_P(GradientAccumulation, TwoHalfBatchesStepAsTheWholeBatch) {
  auto config = accumulation_config(GetParam());
  const auto halves = image_batches(testing::vit_of(config), 4, 3);
  std::vector<Batch> wholes;
  for (size_t i = 0; i < halves.size(); i += 2) {
    wholes.push_back({torch::cat({halves[i].inputs, halves[i + 1].inputs}),
                      torch::cat({halves[i].targets, halves[i + 1].targets})});
  }
  config.train.batch_size = 6;
  const auto whole = fit(config, wholes);
  config.train.batch_size = 3;
  config.train.accumulation_steps = 2;
  const auto accumulated = fit(config, halves);
  EXPECT_EQ(accumulated.result.steps, 2);
  EXPECT_EQ(whole.result.steps, 2);
  // Only the summation order differs (see trajectory.h for the tolerance).
  EXPECT_LE(testing::max_param_diff(whole.params, accumulated.params),
            testing::kTrajectoryTolerance);
  EXPECT_NEAR(accumulated.result.last_loss, whole.result.last_loss, 1e-5);
}

INSTANTIATE_TEST_SUITE_P(Rules, GradientAccumulation,
                         ::testing::Values(UpdateRule::kAdamW, UpdateRule::kAdamWScale));

TEST(GradientAccumulationSteps, AnEpochsIncompleteLastStepIsLeftOut) {
  auto config = accumulation_config(UpdateRule::kAdamW);
  config.train.batch_size = 3;
  config.train.accumulation_steps = 3;
  const auto run = fit(config, image_batches(testing::vit_of(config), 4, 3));
  EXPECT_EQ(run.result.steps, 1);
  config.train.accumulation_steps = 5;
  try {
    fit(config, image_batches(testing::vit_of(config), 4, 3));
    FAIL() << "expected an error";
  } catch (const InputError& error) {
    EXPECT_NE(std::string(error.what()).find("train.accumulation_steps = 5"), std::string::npos)
        << error.what();
  }
}

}  // namespace
}  // namespace exfusion
