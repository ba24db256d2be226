// Warmup + cosine learning-rate schedule (see schedule.h).
#include "exfusion/train/schedule.h"

#include <cmath>

namespace exfusion {

constexpr double kPi = 3.14159265358979323846;

double WarmupCosine::lr_at(int64_t step) const {
  if (step < warmup_steps) {
    const double progress = static_cast<double>(step) / static_cast<double>(warmup_steps);
    return warmup_start_lr + (base_lr - warmup_start_lr) * progress;
  }
  if (step >= total_steps) return min_lr;
  const double progress =
      static_cast<double>(step - warmup_steps) / static_cast<double>(total_steps - warmup_steps);
  return min_lr + 0.5 * (base_lr - min_lr) * (1.0 + std::cos(kPi * progress));
}

}  // namespace exfusion
