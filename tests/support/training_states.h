// Comparing two runs' training states bit for bit, apart from what is wall-clock time: the
// end of `trainer.progress` holds the training and evaluation seconds.
#pragma once
#include <gtest/gtest.h>

#include <filesystem>

#include "exfusion/io/safetensors.h"

namespace exfusion::testing {

inline void expect_same_training_state(const std::filesystem::path& expected_path,
                                       const std::filesystem::path& actual_path) {
  const auto expected = load_safetensors(expected_path);
  const auto actual = load_safetensors(actual_path);
  ASSERT_EQ(expected.tensors.size(), actual.tensors.size());
  for (const auto& [name, tensor] : expected.tensors) {
    ASSERT_TRUE(actual.tensors.count(name)) << name;
    const auto& other = actual.tensors.at(name);
    if (name == "trainer.progress") {
      // [window loss sum, last loss, train seconds, eval seconds]; the metrics are their own
      // tensors (trainer.window_metric_sums, trainer.last_metrics), compared whole below.
      EXPECT_TRUE(torch::equal(tensor.slice(0, 0, 2), other.slice(0, 0, 2))) << name;
    } else {
      EXPECT_TRUE(torch::equal(tensor, other)) << name;
    }
  }
}

}  // namespace exfusion::testing
