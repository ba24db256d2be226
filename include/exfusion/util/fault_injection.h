// Named points where a process can be killed on purpose, so the tests of exact resume kill a
// run inside a step, a checkpoint write, an evaluation or the final fuse — deterministically,
// not by timing. EXFUSION_KILL_AT=<point>:<n>[:TERM|INT|STOP] sends this process SIGKILL (or
// SIGTERM, SIGINT, SIGSTOP) the n-th time it reaches <point>; without the variable a point costs
// one branch.
#pragma once

namespace exfusion {

// The points: "step" (after the backward, before the optimizer step), "eval" (as an evaluation
// starts), "safetensors-write" (half of a safetensors file written to its temporary),
// "fuse" (the fused model built, not yet evaluated or written).
void fault_point(const char* name);

}  // namespace exfusion
