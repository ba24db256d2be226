// train.cuda_graph on the CPU: a run is refused before any work, with the reason and the
// switch (test_cuda_graph_step_gpu.cpp compares graphed and eager training on the GPU machine).
#include <gtest/gtest.h>
#include <torch/types.h>

#include <string>

#include "../support/tiny_models.h"
#include "exfusion/train/trainer.h"
#include "exfusion/util/error.h"

namespace exfusion {
namespace {

TEST(CudaGraphStep, RefusesADeviceThatIsNotCuda) {
  RunConfig config = default_run_config();
  testing::use_vit(config, testing::tiny_vit());
  config.train.device = "cpu";
  config.train.precision = "fp32";
  config.train.cuda_graph = true;
  auto model = build_model(config.model, config.ffn);
  try {
    Trainer trainer(config.train, model, make_task(config), torch::kCPU);
    FAIL() << "expected InputError";
  } catch (const InputError& error) {
    EXPECT_NE(std::string(error.what())
                  .find("train.cuda_graph = true: CUDA graphs need a CUDA "
                        "device, and this run's device is cpu"),
              std::string::npos)
        << error.what();
  }
}

}  // namespace
}  // namespace exfusion
