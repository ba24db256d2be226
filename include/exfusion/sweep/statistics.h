// The statistics of a sweep's table: mean and sample standard deviation over seeds, and
// Welch's t-test between a configuration and the baseline (unequal variances), so that a reader
// sees which gaps exceed the noise of a change of seed.
#pragma once
#include <optional>
#include <vector>

namespace exfusion {

struct SampleSummary {
  int64_t n = 0;
  double mean = 0.0;
  double std = 0.0;  // sample standard deviation (n − 1); 0 for one value
};

SampleSummary summarize(const std::vector<double>& values);

struct WelchTest {
  double t = 0.0;   // (mean_a − mean_b) / sqrt(s_a²/n_a + s_b²/n_b)
  double df = 0.0;  // Welch–Satterthwaite degrees of freedom
  double p = 1.0;   // two-sided p-value from Student's t with df degrees of freedom
};

// Null when the test is undefined: fewer than two values on a side, or no variance on either
// (every seed gave the same number: nothing to compare the gap with).
std::optional<WelchTest> welch_t_test(const std::vector<double>& a, const std::vector<double>& b);

}  // namespace exfusion
