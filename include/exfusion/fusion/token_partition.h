// EWA's random uniform partition of a step's tokens into N equal groups, one per expert. Drawn on
// the host from the run's CPU generator, over the global batch: every data-parallel rank draws
// the same partition and keeps its own slice, and a resumed run (whose generator state the
// checkpoint restores) draws what the uninterrupted run drew.
#pragma once
#include <ATen/core/Generator.h>
#include <torch/types.h>

#include <string>

#include "exfusion/config/fields.h"
#include "exfusion/util/global_batch.h"

namespace exfusion {

// What one partition splits: all the global batch's tokens together, or each sample's own.
enum class PartitionScope { kBatch, kSample };

// batch, sample: the config's names.
const config::Choices<PartitionScope>& partition_scope_names();
std::string to_string(PartitionScope scope);

// This rank's share of one partition.
struct TokenPartition {
  torch::Tensor group;  // [tokens] int64, CPU: each of this rank's tokens' group
  // [tokens] int64, CPU: each token's row in a [groups · capacity] dispatch buffer: its group ·
  // capacity + its place among its group's tokens on this rank (in token order).
  torch::Tensor slot;
  int64_t capacity = 0;  // the most tokens any group has on this rank
};

// Partitions the global batch's tokens (`place.ranks` slices of `samples` samples × `tokens_per_
// sample` tokens, sample-major; this rank's slice is the place.rank-th) into `groups` groups
// whose sizes differ by at most one within each unit of `scope`: a uniformly random permutation
// of the unit's L tokens (randperm from `generator`) puts the token at place p into group
// ⌊p · groups / L⌋. Draws the whole global batch's permutations whichever the rank, so that the
// generator advances alike on every rank and in one process holding the whole batch.
TokenPartition draw_token_partition(int64_t samples, int64_t tokens_per_sample, int64_t groups,
                                    PartitionScope scope, GlobalBatchPlace place,
                                    at::Generator generator);

}  // namespace exfusion
