// Strided index loops over short-lived threads (see index_threads.h). The threads live for one
// call: the loaders call this once per block of many items, which outweighs a thread's start.
#include "exfusion/util/index_threads.h"

#include <algorithm>
#include <exception>
#include <thread>
#include <vector>

namespace exfusion {

void for_each_index_in_threads(int64_t count, int64_t threads,
                               const std::function<void(int64_t)>& body) {
  const auto used = std::max<int64_t>(1, std::min(threads, count));
  // The first error of each thread, at the index it happened.
  std::vector<std::exception_ptr> errors(static_cast<size_t>(used));
  std::vector<int64_t> failed_at(static_cast<size_t>(used), count);
  const auto run = [&](int64_t thread) {
    for (int64_t i = thread; i < count; i += used) {
      try {
        body(i);
      } catch (...) {
        errors[static_cast<size_t>(thread)] = std::current_exception();
        failed_at[static_cast<size_t>(thread)] = i;
        return;
      }
    }
  };
  std::vector<std::thread> helpers;
  helpers.reserve(static_cast<size_t>(used - 1));
  for (int64_t t = 1; t < used; ++t) helpers.emplace_back(run, t);
  run(0);
  for (auto& helper : helpers) helper.join();
  const auto first = std::min_element(failed_at.begin(), failed_at.end()) - failed_at.begin();
  if (errors[static_cast<size_t>(first)])
    std::rethrow_exception(errors[static_cast<size_t>(first)]);
}

}  // namespace exfusion
