// Learning-rate schedules, applied per step rather than per epoch so short runs still get a
// smooth curve: linear warmup then cosine decay to min_lr (DeiT's recipe; nanoT5's with the
// warmup starting at half the peak), and T5's legacy inverse square root (nanoT5's `legacy`).
#pragma once
#include <cstdint>

#include "exfusion/config/fields.h"

namespace exfusion {

struct WarmupCosine {
  double base_lr;
  double min_lr;
  int64_t warmup_steps;
  int64_t total_steps;
  // Where the warmup starts. 0 means the first update only primes AdamW's moments (its
  // decoupled weight decay scales with lr too), which is what timm's near-zero start does.
  double warmup_start_lr = 0.0;

  // The lr for the update that follows `step` completed steps: warmup_start_lr at 0,
  // base_lr at warmup_steps, (base_lr + min_lr) / 2 halfway through the decay, min_lr from
  // total_steps on.
  double lr_at(int64_t step) const;
};

// T5's schedule as nanoT5's `legacy` runs it, whatever train.lr says: min(1e-2, 1/√step) (1e-2
// at step 0) for the first ceil(0.9 · total_steps) steps, then linearly to 0 at total_steps.
struct InverseSqrtLinear {
  int64_t total_steps;
  double lr_at(int64_t step) const;
};

enum class ScheduleKind { kCosine, kInverseSqrt };
const config::Choices<ScheduleKind>& schedule_kind_names();  // cosine, inverse_sqrt

// The run's schedule: one of the above, as train.schedule names it.
struct LearningRateSchedule {
  ScheduleKind kind = ScheduleKind::kCosine;
  WarmupCosine cosine{};
  InverseSqrtLinear inverse_sqrt{};
  double lr_at(int64_t step) const {
    return kind == ScheduleKind::kCosine ? cosine.lr_at(step) : inverse_sqrt.lr_at(step);
  }
};

}  // namespace exfusion
