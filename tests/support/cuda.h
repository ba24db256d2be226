// The guard of the GPU-only tests: without a CUDA device they skip with a message (they are
// meant for the GPU machine); with one, the custom kernels must have been built.
#pragma once
#include <gtest/gtest.h>
#include <torch/cuda.h>

#include "exfusion/fusion/expert_kernels.h"

#define REQUIRE_CUDA_KERNELS()                                                                   \
  do {                                                                                           \
    if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device: runs on the GPU machine"; \
    ASSERT_TRUE(exfusion::expert_kernels_compiled())                                             \
        << "CUDA device present but kernels not built";                                          \
  } while (0)
