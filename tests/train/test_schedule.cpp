// Learning-rate values at the points a run depends on: warmup + cosine (DeiT's and nanoT5's
// start at half the peak) at the start, the ramp, the peak, the middle and end of the decay and
// past it; T5's legacy inverse square root before and through its linear tail.
#include <gtest/gtest.h>

#include <cmath>

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

namespace exfusion {
namespace {

// nanoT5's cosine: LinearLR from 0.5× to 1× over the warmup, then cosine to final_cosine.
TEST(WarmupCosine, NanoT5sWarmupStartsAtHalfThePeak) {
  const WarmupCosine schedule{2e-2, 1e-5, 100, 1100, 1e-2};
  EXPECT_DOUBLE_EQ(schedule.lr_at(0), 1e-2);
  EXPECT_DOUBLE_EQ(schedule.lr_at(50), 1.5e-2);
  EXPECT_DOUBLE_EQ(schedule.lr_at(100), 2e-2);
  EXPECT_DOUBLE_EQ(schedule.lr_at(1100), 1e-5);
}

TEST(InverseSqrtLinear, IsT5sLegacySchedule) {
  const InverseSqrtLinear schedule{1000};
  EXPECT_DOUBLE_EQ(schedule.lr_at(0), 1e-2);
  EXPECT_DOUBLE_EQ(schedule.lr_at(100), 1e-2);    // 1/√100 = 0.1, capped at 1e-2
  EXPECT_DOUBLE_EQ(schedule.lr_at(899), 1e-2);    // 1/√899 = 0.033, capped
  EXPECT_DOUBLE_EQ(schedule.lr_at(950), 0.5e-2);  // halfway down from step 900's 1e-2
  // Past 1e4 steps the inverse square root is below the cap; a longer run shows it.
  const InverseSqrtLinear longer{100000};
  EXPECT_DOUBLE_EQ(longer.lr_at(40000), 1.0 / 200.0);
  // The last 10 %: linear from the value at ceil(0.9 T) to 0 at T.
  EXPECT_DOUBLE_EQ(longer.lr_at(90000), 1.0 / std::sqrt(90000.0));
  EXPECT_NEAR(longer.lr_at(95000), 0.5 / std::sqrt(90000.0), 1e-15);
  EXPECT_DOUBLE_EQ(longer.lr_at(100000), 0.0);
}

TEST(LearningRateSchedule, FollowsItsKind) {
  LearningRateSchedule schedule;
  schedule.cosine = {1.0, 0.0, 0, 10};
  schedule.inverse_sqrt = {10};
  EXPECT_DOUBLE_EQ(schedule.lr_at(0), 1.0);
  schedule.kind = ScheduleKind::kInverseSqrt;
  EXPECT_DOUBLE_EQ(schedule.lr_at(0), 1e-2);
}

}  // namespace
}  // namespace exfusion
