// On the GPU machine: training through the expert-bank CUDA kernels and the factored AdamW step
// follows the trajectory of plain autograd with materialised expert gradients (the CPU half is
// test_factored_training.cpp).
#include <gtest/gtest.h>

#include "../support/cuda.h"
#include "../support/factored_training.h"

namespace exfusion {
namespace {

TEST(FactoredTraining, MatchesMaterialisedGradientsOnCuda) {
  REQUIRE_CUDA_KERNELS();
  testing::expect_same_factored_trajectory("cuda");
}

}  // namespace
}  // namespace exfusion
