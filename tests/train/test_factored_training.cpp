// Training with the expert-bank kernels and the factored AdamW step (train.expert_kernels)
// follows the same trajectory as plain autograd with materialised expert gradients, on the CPU
// through the references (test_factored_training_gpu.cpp: on a GPU through the CUDA kernels),
// and a later trainer without the kernels takes the banks back.
#include <gtest/gtest.h>
#include <torch/types.h>

#include <memory>
#include <vector>

#include "../support/factored_training.h"
#include "exfusion/data/loader.h"
#include "exfusion/fusion/expert_bank.h"
#include "exfusion/train/trainer.h"

namespace exfusion {
namespace {

TEST(FactoredTraining, MatchesMaterialisedGradientsOnCpu) {
  testing::expect_same_factored_trajectory("cpu");
}

// A model outlives its trainer. A later trainer without the kernels must get the banks'
// weight gradients itself rather than leave them in the earlier trainer's sink.
TEST(FactoredTraining, ALaterTrainerWithoutTheKernelsStepsTheBanks) {
  const auto with_kernels = testing::factored_training_config(true, "cpu");
  torch::manual_seed(7);
  auto model = build_model(with_kernels.model, with_kernels.ffn);
  std::vector<ExpertBank> banks;
  for (const auto& module : model->modules(/*include_self=*/false)) {
    if (auto bank = std::dynamic_pointer_cast<ExpertBankImpl>(module)) banks.emplace_back(bank);
  }
  ASSERT_FALSE(banks.empty());
  const auto m = testing::vit_of(with_kernels);
  const auto batch = [&] {
    return Batch{torch::randn({6, m.in_chans, m.img_size, m.img_size}),
                 torch::randint(0, m.num_classes, {6})};
  };
  {
    Trainer first(with_kernels.train, model, make_task(with_kernels), torch::kCPU);
    for (const auto& bank : banks) EXPECT_NE(bank->weight_grad_sink, nullptr);
    first.step(batch());
  }
  for (const auto& bank : banks) EXPECT_EQ(bank->weight_grad_sink, nullptr);
  const auto without_kernels = testing::factored_training_config(false, "cpu");
  Trainer second(without_kernels.train, model, make_task(without_kernels), torch::kCPU);
  second.set_lr(1e-2);
  std::vector<torch::Tensor> before;
  before.reserve(banks.size());
  for (const auto& bank : banks) before.push_back(bank->weight.detach().clone());
  second.step(batch());
  for (size_t i = 0; i < banks.size(); ++i) {
    EXPECT_GT((banks[i]->weight.detach() - before[i]).abs().max().item<double>(), 1e-4)
        << "bank " << i << " was not stepped";
  }
}

}  // namespace
}  // namespace exfusion
