// Warmup + cosine learning-rate values at the points a run depends on: the start, the warmup
// ramp, the peak, the middle and end of the decay, and past the end.
#include <gtest/gtest.h>

#include "exfusion/train/schedule.h"

namespace exfusion {
namespace {

TEST(WarmupCosine, WarmsUpLinearlyToTheBase) {
  const WarmupCosine schedule{1.0, 0.1, 10, 110};
  EXPECT_DOUBLE_EQ(schedule.lr_at(0), 0.0);
  EXPECT_DOUBLE_EQ(schedule.lr_at(5), 0.5);
  EXPECT_DOUBLE_EQ(schedule.lr_at(10), 1.0);

  WarmupCosine from_start = schedule;
  from_start.warmup_start_lr = 0.2;
  EXPECT_DOUBLE_EQ(from_start.lr_at(0), 0.2);
  EXPECT_DOUBLE_EQ(from_start.lr_at(5), 0.6);
  EXPECT_DOUBLE_EQ(from_start.lr_at(10), 1.0);
}

TEST(WarmupCosine, DecaysToMinAndStaysThere) {
  const WarmupCosine schedule{1.0, 0.1, 10, 110};
  EXPECT_NEAR(schedule.lr_at(60), 0.55, 1e-12);
  EXPECT_LT(schedule.lr_at(85), 0.55);
  EXPECT_GT(schedule.lr_at(85), 0.1);
  EXPECT_DOUBLE_EQ(schedule.lr_at(110), 0.1);
  EXPECT_DOUBLE_EQ(schedule.lr_at(500), 0.1);
}

TEST(WarmupCosine, NoWarmup) {
  const WarmupCosine schedule{1.0, 0.0, 0, 10};
  EXPECT_DOUBLE_EQ(schedule.lr_at(0), 1.0);
  EXPECT_NEAR(schedule.lr_at(5), 0.5, 1e-12);
  EXPECT_DOUBLE_EQ(schedule.lr_at(10), 0.0);
}

}  // namespace
}  // namespace exfusion
