// One training state: save → load → one more step equals two steps straight, bit for bit on
// the CPU, for dense, ExFusion-mb (banks and routers) and MoE; the position, the RNG and the
// config come back; a file that is no training state is refused with its name.
#include <gtest/gtest.h>

#include <ATen/CPUGeneratorImpl.h>

#include "../support/cli.h"
#include "../support/tiny_models.h"
#include "exfusion/io/module_tensors.h"
#include "exfusion/train/trainer.h"
#include "exfusion/train/training_state.h"
#include "exfusion/util/error.h"
#include "exfusion/util/tensor_checksum.h"

namespace exfusion {
namespace {

RunConfig tiny_config(const std::string& kind) {
  auto config = default_run_config();
  testing::use_vit(config, testing::tiny_vit(kind, FusionVariant::kMemoryBank, 3));
  config.train.device = "cpu";
  config.train.precision = "fp32";
  config.train.batch_size = 6;
  return config;
}

std::vector<Batch> batches(const RunConfig& config, int count) {
  const auto m = testing::vit_of(config);
  torch::manual_seed(11);
  std::vector<Batch> out;
  for (int i = 0; i < count; ++i) {
    out.push_back({torch::randn({6, m.in_chans, m.img_size, m.img_size}),
                   torch::randint(0, m.num_classes, {6})});
  }
  return out;
}

class TrainingStateTest : public ::testing::TestWithParam<std::string> {};

TEST_P(TrainingStateTest, SaveLoadAndOneMoreStepEqualsTwoStepsStraight) {
  const auto config = tiny_config(GetParam());
  const auto data = batches(config, 2);
  const auto dir = testing::fresh_temp_dir("training-state-" + GetParam());

  torch::manual_seed(3);
  auto straight_model = build_model(config.model, config.ffn);
  Trainer straight(config.train, straight_model, make_task(config), torch::kCPU);
  straight.set_lr(1e-2);
  straight.step(data[0]);
  straight.step(data[1]);

  torch::manual_seed(3);
  auto first_model = build_model(config.model, config.ffn);
  {
    Trainer first(config.train, first_model, make_task(config), torch::kCPU);
    first.set_lr(1e-2);
    first.step(data[0]);
    first.state(config).save(dir / "state.safetensors");
  }

  const auto loaded = TrainingState::load(dir / "state.safetensors");
  EXPECT_EQ(loaded.step, 1);
  EXPECT_EQ(loaded.format, TrainingState::kFormatVersion);
  EXPECT_EQ(to_json(loaded.config), to_json(config));
  torch::manual_seed(99);  // another init, which the restore must overwrite entirely
  auto resumed_model = build_model(loaded.config.model, loaded.config.ffn);
  Trainer resumed(loaded.config.train, resumed_model, make_task(loaded.config), torch::kCPU);
  resumed.restore(loaded);
  EXPECT_EQ(resumed.steps_done(), 1);
  resumed.set_lr(1e-2);
  resumed.step(data[1]);

  const auto expected = module_tensors(*straight_model);
  const auto actual = module_tensors(*resumed_model);
  ASSERT_EQ(actual.size(), expected.size());
  for (size_t i = 0; i < expected.size(); ++i) {
    EXPECT_EQ(actual[i].first, expected[i].first);
    EXPECT_TRUE(torch::equal(actual[i].second, expected[i].second)) << expected[i].first;
  }
  const auto straight_state = straight.state(config);
  const auto resumed_state = resumed.state(config);
  for (const auto& [name, tensor] : straight_state.optimizer) {
    EXPECT_TRUE(torch::equal(resumed_state.optimizer.at(name), tensor)) << name;
  }
  testing::remove_tree(dir);
}

INSTANTIATE_TEST_SUITE_P(Kinds, TrainingStateTest,
                         ::testing::Values("dense", "exfusion", "moe", "ders-moe",
                                           "ders-exfusion"));

TEST(TrainingState, KeepsThePositionAndTheRandomGenerator) {
  const auto dir = testing::fresh_temp_dir("training-state-position");
  TrainingState state;
  state.config = tiny_config("exfusion");
  state.step = 17;
  state.epoch = 2;
  state.batch_in_epoch = 5;
  torch::manual_seed(5);
  auto generator = at::detail::getDefaultCPUGenerator();
  state.cpu_rng = generator.get_state();
  const auto next_draw = torch::rand({4});
  state.save(dir / "state.safetensors");
  const auto loaded = TrainingState::load(dir / "state.safetensors");
  EXPECT_EQ(loaded.step, 17);
  EXPECT_EQ(loaded.epoch, 2);
  EXPECT_EQ(loaded.batch_in_epoch, 5);
  generator.set_state(loaded.cpu_rng);
  EXPECT_TRUE(torch::equal(torch::rand({4}), next_draw));
  testing::remove_tree(dir);
}

TEST(TrainingState, ADenseModelFileIsNotATrainingState) {
  const auto dir = testing::fresh_temp_dir("training-state-dense");
  save_safetensors(dir / "model.safetensors", {{"w", torch::zeros({2})}},
                   {{"exfusion.kind", "dense-model"},
                    {"exfusion.config", to_json(default_run_config()).dump()}});
  try {
    TrainingState::load(dir / "model.safetensors");
    FAIL() << "loaded a dense model as a training state";
  } catch (const InputError& error) {
    EXPECT_NE(std::string(error.what()).find("model.safetensors"), std::string::npos);
    EXPECT_NE(std::string(error.what()).find("not a training state"), std::string::npos);
  }
  save_safetensors(dir / "future.safetensors", {{"w", torch::zeros({2})}},
                   {{"exfusion.kind", "training-state"}, {"exfusion.format", "9"}});
  try {
    TrainingState::load(dir / "future.safetensors");
    FAIL() << "loaded a format 9 file";
  } catch (const InputError& error) {
    EXPECT_NE(std::string(error.what()).find("format 9"), std::string::npos) << error.what();
  }
  testing::remove_tree(dir);
}

// Format 3 (before tasks declared their metrics) kept accuracy's count in the window counts and
// the last accuracy among the times. Such a state, written here from a format 4 one as the
// previous build laid it out, still loads, reads as accuracy's window and resumes.
TEST(TrainingState, AFormat3StateStillLoadsAndResumes) {
  const auto dir = testing::fresh_temp_dir("training-state-format3");
  const auto config = tiny_config("exfusion");
  const auto data = batches(config, 1);
  auto model = build_model(config.model, config.ffn);
  Trainer trainer(config.train, model, make_task(config), torch::kCPU);
  trainer.step(data[0]);
  trainer.state(config).save(dir / "format4.safetensors");

  auto file = load_safetensors(dir / "format4.safetensors");
  EXPECT_EQ(file.metadata.at("exfusion.format"), "4");
  file.tensors.erase("trainer.window_metric_sums");
  file.tensors.erase("trainer.last_metrics");
  file.metadata.erase("exfusion.metric_names");
  file.tensors["trainer.window_counts"] = torch::tensor(std::vector<int64_t>{1, 6, 4});
  const auto times = file.tensors.at("trainer.progress");
  file.tensors["trainer.progress"] = torch::tensor(
      std::vector<double>{2.5, 2.25, 0.75, times[2].item<double>(), times[3].item<double>()},
      torch::kFloat64);
  file.metadata["exfusion.format"] = "3";
  uint32_t crc = 0;
  NamedTensors tensors;
  for (const auto& [name, tensor] : file.tensors) {  // name order, as the writer sums them
    crc = crc32_of(tensor, crc);
    tensors.emplace_back(name, tensor);
  }
  char checksum[16];
  std::snprintf(checksum, sizeof checksum, "%08lx", static_cast<unsigned long>(crc));
  file.metadata["exfusion.checksum"] = checksum;
  save_safetensors(dir / "format3.safetensors", tensors, file.metadata);

  const auto loaded = TrainingState::load(dir / "format3.safetensors");
  EXPECT_EQ(loaded.format, 3);
  EXPECT_EQ(loaded.progress.metric_names, std::vector<std::string>{"accuracy"});
  EXPECT_EQ(loaded.progress.window_metric_sums, std::vector<double>{4.0});
  EXPECT_EQ(loaded.progress.window_samples, 6);
  EXPECT_EQ(loaded.progress.window_loss_sum, 2.5);
  EXPECT_EQ(loaded.progress.last_loss, 2.25);
  EXPECT_EQ(loaded.progress.last_metrics, std::vector<double>{0.75});
  EXPECT_EQ(loaded.progress.train_seconds, times[2].item<double>());
  Trainer resumed(loaded.config.train, build_model(loaded.config.model, loaded.config.ffn),
                  make_task(loaded.config), torch::kCPU);
  resumed.restore(loaded);
  EXPECT_EQ(resumed.steps_done(), 1);
  EXPECT_EQ(resumed.state(loaded.config).progress.window_metric_sums, std::vector<double>{4.0});
  testing::remove_tree(dir);
}

}  // namespace
}  // namespace exfusion
