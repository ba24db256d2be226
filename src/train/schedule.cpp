// Learning-rate schedules (see schedule.h).
#include "exfusion/train/schedule.h"

#include <algorithm>
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

namespace {
double inverse_sqrt(int64_t step) {
  return step == 0 ? 1e-2 : std::min(1e-2, 1.0 / std::sqrt(static_cast<double>(step)));
}
}  // namespace

double InverseSqrtLinear::lr_at(int64_t step) const {
  const auto decay_start = static_cast<int64_t>(std::ceil(0.9 * static_cast<double>(total_steps)));
  if (step < decay_start) return inverse_sqrt(step);
  if (step >= total_steps) return 0.0;
  const double left =
      static_cast<double>(total_steps - step) / static_cast<double>(total_steps - decay_start);
  return inverse_sqrt(decay_start) * left;
}

const config::Choices<ScheduleKind>& schedule_kind_names() {
  static const config::Choices<ScheduleKind> names{
      {{"cosine", ScheduleKind::kCosine}, {"inverse_sqrt", ScheduleKind::kInverseSqrt}}};
  return names;
}

}  // namespace exfusion
