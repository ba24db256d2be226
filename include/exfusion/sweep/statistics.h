// The statistics of a sweep's table: mean and sample standard deviation over seeds, Welch's
// t-test between a configuration and the baseline (unequal variances), so that a reader sees
// which gaps exceed the noise of a change of seed, and how many seeds a gap of the size seen
// would need to be told from that noise.
#pragma once
#include <cstdint>
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

// The power of a two-sided two-sample t-test at level `alpha` with n seeds a side, for a true
// difference `difference` and a per-seed standard deviation `std`: P(|T| > t_{1−α/2, 2n−2})
// where T is non-central t with 2n − 2 degrees of freedom and non-centrality difference /
// (std · √(2/n)).
double t_test_power(double difference, double std, int64_t n, double alpha = 0.05);

// The fewest seeds a side (2 or more) at which a gap as large as the one between `a` and `b`
// would be found at level `alpha` with probability `power`, taking the std of a seed as the
// root mean square of the two sides' sample stds. Null where undefined (fewer than two values
// a side, no gap, or no variance) or where more than `most` would be needed.
std::optional<int64_t> seeds_for_power(const std::vector<double>& a, const std::vector<double>& b,
                                       double power = 0.8, double alpha = 0.05,
                                       int64_t most = 10000);

}  // namespace exfusion
