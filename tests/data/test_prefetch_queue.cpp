// The loaders' prefetch queue and the strided thread loop: items arrive in order, a producer's
// error arrives after the items made before it, a restart drops what the last producer queued
// and joins it (also while it waits on a full queue); every index runs once, and the error of
// the lowest failing index is the one rethrown whatever the thread count.
#include <gtest/gtest.h>

#include <atomic>
#include <stdexcept>
#include <vector>

#include "exfusion/data/prefetch_queue.h"
#include "exfusion/util/index_threads.h"

namespace exfusion {
namespace {

TEST(PrefetchQueue, ItemsArriveInOrderThenTheProducersError) {
  PrefetchQueue<int> queue(2);
  queue.start([](const PrefetchQueue<int>::Push& push) {
    for (int i = 0; i < 5; ++i) push(i);
    throw std::runtime_error("after five");
  });
  for (int i = 0; i < 5; ++i) EXPECT_EQ(queue.next(), i);
  EXPECT_THROW(queue.next(), std::runtime_error);

  queue.start([](const PrefetchQueue<int>::Push& push) { push(7); });
  EXPECT_EQ(queue.next(), 7);
  EXPECT_FALSE(queue.next().has_value());
}

TEST(PrefetchQueue, ARestartStopsAProducerWaitingOnAFullQueue) {
  PrefetchQueue<int> queue(1);
  std::atomic<bool> stopped{false};
  queue.start([&](const PrefetchQueue<int>::Push& push) {
    for (int i = 0;; ++i) {
      if (!push(i)) break;
    }
    stopped = true;
  });
  EXPECT_EQ(queue.next(), 0);
  queue.start([](const PrefetchQueue<int>::Push& push) { push(100); });
  EXPECT_TRUE(stopped);
  EXPECT_EQ(queue.next(), 100);  // nothing of the first producer is left
  EXPECT_FALSE(queue.next().has_value());
}

TEST(IndexThreads, EveryIndexRunsOnceAndTheLowestErrorWins) {
  for (const int64_t threads : {1, 3, 8}) {
    std::vector<std::atomic<int>> runs(50);
    for_each_index_in_threads(50, threads, [&](int64_t i) { ++runs[static_cast<size_t>(i)]; });
    for (const auto& count : runs) EXPECT_EQ(count.load(), 1) << threads << " threads";
    try {
      for_each_index_in_threads(50, threads, [](int64_t i) {
        if (i == 13 || i == 31) throw std::runtime_error(std::to_string(i));
      });
      FAIL() << "no error";
    } catch (const std::runtime_error& error) {
      EXPECT_STREQ(error.what(), "13") << threads << " threads";
    }
  }
  for_each_index_in_threads(0, 4, [](int64_t) { FAIL() << "ran an index of none"; });
}

}  // namespace
}  // namespace exfusion
