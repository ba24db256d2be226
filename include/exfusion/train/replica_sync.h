// Keeping data-parallel replicas one model: every rank starts from rank 0's training state
// (its fresh init, its upcycled weights, or the checkpoint it resumed from, which only rank 0
// need be able to read), and at the end the ranks prove their weights bit-identical.
#pragma once
#include <nlohmann/json.hpp>

#include "exfusion/dist/process_group.h"
#include "exfusion/train/trainer.h"

namespace exfusion {

// Rank 0's training state (of the run `config`) restored into every other rank's trainer
// (tensors broadcast over the process group). Every rank calls it, at the same point.
void synchronize_replicas(Trainer& trainer, const RunConfig& config, DistributedGroup& group);

// {"identical": bool, "differs": [{"rank": r, "tensor": name}, ...]} comparing each rank's model
// tensors' CRC-32 with rank 0's. Every rank calls it; the answer is the same on every rank.
nlohmann::json compare_replicas(const Trainer& trainer, DistributedGroup& group);

}  // namespace exfusion
