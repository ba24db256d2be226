// Whether two loaders (or two settings of one) gave the same batches: inputs and targets equal
// element for element, batch by batch. The loaders' determinism tests share it.
#pragma once
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <vector>

#include "exfusion/data/batch.h"

namespace exfusion::testing {

inline void expect_same_batches(const std::vector<Batch>& expected, const std::vector<Batch>& got) {
  ASSERT_EQ(expected.size(), got.size());
  for (size_t i = 0; i < expected.size(); ++i) {
    EXPECT_TRUE(torch::equal(expected[i].inputs, got[i].inputs)) << "batch " << i;
    EXPECT_TRUE(torch::equal(expected[i].targets, got[i].targets)) << "batch " << i;
  }
}

}  // namespace exfusion::testing
