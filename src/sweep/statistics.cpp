// Mean, standard deviation and Welch's t-test (see statistics.h); Student's t distribution from
// Boost.Math, which takes non-integer degrees of freedom.
#include "exfusion/sweep/statistics.h"

#include <algorithm>
#include <boost/math/distributions/non_central_t.hpp>
#include <boost/math/distributions/students_t.hpp>
#include <cmath>
#include <exception>
#include <numeric>

namespace exfusion {

SampleSummary summarize(const std::vector<double>& values) {
  SampleSummary summary;
  summary.n = static_cast<int64_t>(values.size());
  if (values.empty()) return summary;
  summary.mean =
      std::accumulate(values.begin(), values.end(), 0.0) / static_cast<double>(summary.n);
  if (summary.n > 1) {
    double squares = 0.0;
    for (const double value : values) squares += (value - summary.mean) * (value - summary.mean);
    summary.std = std::sqrt(squares / static_cast<double>(summary.n - 1));
  }
  return summary;
}

std::optional<WelchTest> welch_t_test(const std::vector<double>& a, const std::vector<double>& b) {
  const auto sa = summarize(a), sb = summarize(b);
  if (sa.n < 2 || sb.n < 2) return std::nullopt;
  const double va = sa.std * sa.std / static_cast<double>(sa.n);
  const double vb = sb.std * sb.std / static_cast<double>(sb.n);
  if (va + vb <= 0.0) return std::nullopt;
  WelchTest test;
  test.t = (sa.mean - sb.mean) / std::sqrt(va + vb);
  test.df = (va + vb) * (va + vb) /
            (va * va / static_cast<double>(sa.n - 1) + vb * vb / static_cast<double>(sb.n - 1));
  const boost::math::students_t distribution(test.df);
  test.p = 2.0 * boost::math::cdf(boost::math::complement(distribution, std::fabs(test.t)));
  return test;
}

double t_test_power(double difference, double std, int64_t n, double alpha) {
  const double df = 2.0 * static_cast<double>(n) - 2.0;
  const double critical = boost::math::quantile(boost::math::students_t(df), 1.0 - alpha / 2.0);
  const double shift = std::fabs(difference) / (std * std::sqrt(2.0 / static_cast<double>(n)));
  const boost::math::non_central_t distribution(df, shift);
  return boost::math::cdf(boost::math::complement(distribution, critical)) +
         boost::math::cdf(distribution, -critical);
}

std::optional<int64_t> seeds_for_power(const std::vector<double>& a, const std::vector<double>& b,
                                       double power, double alpha, int64_t most) {
  if (a.size() < 2 || b.size() < 2) return std::nullopt;
  const auto sa = summarize(a), sb = summarize(b);
  const double difference = sa.mean - sb.mean;
  const double std = std::sqrt((sa.std * sa.std + sb.std * sb.std) / 2.0);
  if (difference == 0.0 || std == 0.0) return std::nullopt;
  // Power grows with n. Doubling from 2 keeps the non-centrality near the answer's (a large gap
  // stops at a small n; a tiny gap's non-centrality stays moderate at a large one), then bisect.
  const auto enough = [&](int64_t n) { return t_test_power(difference, std, n, alpha) >= power; };
  try {
    if (enough(2)) return 2;
    int64_t low = 2, high = 4;
    while (!enough(high)) {
      if (high >= most) return std::nullopt;
      low = high;
      high = std::min(most, 2 * high);
    }
    while (high - low > 1) {
      const int64_t middle = low + (high - low) / 2;
      (enough(middle) ? high : low) = middle;
    }
    return high;
  } catch (const std::exception&) {
    // Boost.Math's evaluation errors at extreme non-centralities: no number to give.
    return std::nullopt;
  }
}

}  // namespace exfusion
