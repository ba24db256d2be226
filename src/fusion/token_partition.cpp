// EWA's random uniform token partition (see token_partition.h).
#include "exfusion/fusion/token_partition.h"

#include <algorithm>
#include <vector>

namespace exfusion {

const config::Choices<PartitionScope>& partition_scope_names() {
  static const config::Choices<PartitionScope> names{
      {{"batch", PartitionScope::kBatch}, {"sample", PartitionScope::kSample}}};
  return names;
}

std::string to_string(PartitionScope scope) { return partition_scope_names().name_of(scope); }

TokenPartition draw_token_partition(int64_t samples, int64_t tokens_per_sample, int64_t groups,
                                    PartitionScope scope, GlobalBatchPlace place,
                                    at::Generator generator) {
  TORCH_CHECK(samples >= 0 && tokens_per_sample >= 0 && groups >= 1, "a partition of ", samples,
              " × ", tokens_per_sample, " tokens into ", groups, " groups");
  TORCH_CHECK(place.ranks >= 1 && place.rank >= 0 && place.rank < place.ranks, "rank ", place.rank,
              " of ", place.ranks);
  const int64_t local = samples * tokens_per_sample;
  const int64_t unit = scope == PartitionScope::kBatch ? local * place.ranks : tokens_per_sample;
  const int64_t units = scope == PartitionScope::kBatch ? 1 : samples * place.ranks;
  const int64_t first_local = place.rank * local;  // in the global batch's token order
  auto group = torch::empty({local}, torch::kLong);
  auto* group_of = group.data_ptr<int64_t>();
  const auto long_options = torch::TensorOptions().dtype(torch::kLong);
  for (int64_t u = 0; u < units; ++u) {
    // Drawn for every unit, this rank's or not: the generator moves on as in one process.
    const auto permutation = at::randperm(unit, generator, long_options);
    const auto* token_at = permutation.data_ptr<int64_t>();
    const int64_t unit_start = u * unit;
    if (unit_start + unit <= first_local || unit_start >= first_local + local) continue;
    for (int64_t p = 0; p < unit; ++p) {
      const int64_t token = unit_start + token_at[p] - first_local;
      if (token >= 0 && token < local) group_of[token] = p * groups / unit;
    }
  }
  std::vector<int64_t> count(static_cast<size_t>(groups), 0);
  auto slot = torch::empty({local}, torch::kLong);
  auto* slot_of = slot.data_ptr<int64_t>();
  for (int64_t t = 0; t < local; ++t) slot_of[t] = count[static_cast<size_t>(group_of[t])]++;
  const int64_t capacity = std::max<int64_t>(1, *std::max_element(count.begin(), count.end()));
  for (int64_t t = 0; t < local; ++t) slot_of[t] += group_of[t] * capacity;
  return {group, slot, capacity};
}

}  // namespace exfusion
