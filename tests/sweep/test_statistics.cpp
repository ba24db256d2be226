// The sweep table's statistics against examples worked by hand.
#include <gtest/gtest.h>

#include <cmath>

#include "exfusion/sweep/statistics.h"

namespace exfusion {
namespace {

TEST(Statistics, MeanAndSampleStdOfAHandExample) {
  // {2, 4, 4, 4, 5, 5, 7, 9}: mean 5, squares 32, sample variance 32/7.
  const auto summary = summarize({2, 4, 4, 4, 5, 5, 7, 9});
  EXPECT_EQ(summary.n, 8);
  EXPECT_DOUBLE_EQ(summary.mean, 5.0);
  EXPECT_NEAR(summary.std, std::sqrt(32.0 / 7.0), 1e-12);
  EXPECT_EQ(summarize({3.5}).std, 0.0);
}

// a = {1, 3}, b = {5, 7}: means 2 and 6, both variances 2, so t = −4/√2 = −2√2 and Welch's
// df = (1 + 1)² / (1/1 + 1/1) = 2. Student's t with 2 degrees of freedom has the closed-form
// CDF 1/2 + t / (2√(2 + t²)), so the two-sided p = 1 − |t|/√(2 + t²) = 1 − √(8/10).
TEST(Statistics, WelchTestOfAHandExampleWithTwoDegreesOfFreedom) {
  const auto test = welch_t_test({1, 3}, {5, 7});
  ASSERT_TRUE(test.has_value());
  EXPECT_NEAR(test->t, -2.0 * std::sqrt(2.0), 1e-12);
  EXPECT_NEAR(test->df, 2.0, 1e-12);
  EXPECT_NEAR(test->p, 1.0 - std::sqrt(0.8), 1e-10);  // 0.105573
}

// Unequal variances and sizes: a = {1, 2, 3} (variance 1), b = {2, 4, 6, 8} (variance 20/3):
// s²/n = 1/3 and 5/3, t = (2 − 5)/√2, df = 4 / ((1/3)²/2 + (5/3)²/3) = 4 / (1/18 + 25/27).
TEST(Statistics, WelchDegreesOfFreedomWithUnequalVariances) {
  const auto test = welch_t_test({1, 2, 3}, {2, 4, 6, 8});
  ASSERT_TRUE(test.has_value());
  EXPECT_NEAR(test->t, -3.0 / std::sqrt(2.0), 1e-12);
  EXPECT_NEAR(test->df, 4.0 / (1.0 / 18.0 + 25.0 / 27.0), 1e-12);
  EXPECT_GT(test->p, 0.0);
  EXPECT_LT(test->p, 1.0);
  // Symmetric in its sides.
  EXPECT_NEAR(welch_t_test({2, 4, 6, 8}, {1, 2, 3})->p, test->p, 1e-14);
}

TEST(Statistics, WelchTestIsUndefinedWithOneSeedOrNoVariance) {
  EXPECT_FALSE(welch_t_test({1.0}, {2.0, 3.0}).has_value());
  EXPECT_FALSE(welch_t_test({1.0, 1.0}, {2.0, 2.0}).has_value());
  EXPECT_TRUE(welch_t_test({1.0, 1.0}, {2.0, 2.5}).has_value());
}

// The textbook sample sizes of a two-sided two-sample t-test at α = 0.05 and power 0.8 (Cohen's
// tables, G*Power): 17 a side for an effect of one standard deviation, 64 for half of one; the
// power at n = 17 and d = 1 is 0.807 (16: 0.781).
TEST(Statistics, SeedsForPowerMatchTheTextbookSampleSizes) {
  const double c = 1.0 / std::sqrt(2.0);  // {m − c, m + c} has mean m and sample std 1
  const std::vector<double> zero{-c, c}, one{1.0 - c, 1.0 + c}, half{0.5 - c, 0.5 + c};
  EXPECT_EQ(seeds_for_power(one, zero), 17);
  EXPECT_EQ(seeds_for_power(zero, one), 17);
  EXPECT_EQ(seeds_for_power(half, zero), 64);
  EXPECT_NEAR(t_test_power(1.0, 1.0, 17), 0.807, 0.002);
  EXPECT_NEAR(t_test_power(1.0, 1.0, 16), 0.781, 0.002);
  // No gap, no spread, or one seed a side: nothing to size.
  EXPECT_FALSE(seeds_for_power(zero, zero).has_value());
  EXPECT_FALSE(seeds_for_power({1, 1}, {2, 2}).has_value());
  EXPECT_FALSE(seeds_for_power({1}, {2, 3}).has_value());
  // A gap of ten thousand stds (one run diverged, say) needs the fewest, with no evaluation error.
  EXPECT_EQ(seeds_for_power({0.0, 0.01}, {100.0, 100.01}), 2);
  // A gap of a thousandth of the spread would need millions: beyond `most`.
  EXPECT_FALSE(seeds_for_power({-c, c}, {1e-3 - c, 1e-3 + c}, 0.8, 0.05, 10000).has_value());
}

}  // namespace
}  // namespace exfusion
