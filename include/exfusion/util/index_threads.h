// Runs body(i) for i in [0, count) on up to `threads` threads (the caller's among them), each
// taking every threads-th index: for the loaders' per-item work (tokenising a block of
// documents) whose results land in slots of their own, so the outcome is the same for any count.
#pragma once
#include <cstdint>
#include <functional>

namespace exfusion {

// Returns when every index is done. If bodies throw, the error of the lowest index that threw
// is rethrown (the one a single thread would have met first).
void for_each_index_in_threads(int64_t count, int64_t threads,
                               const std::function<void(int64_t)>& body);

}  // namespace exfusion
