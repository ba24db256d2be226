// Learning-rate schedule: linear warmup to the peak, then cosine decay to min_lr (DeiT's
// recipe, applied per step rather than per epoch so short runs still get a smooth curve).
#pragma once
#include <cstdint>

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

}  // namespace exfusion
