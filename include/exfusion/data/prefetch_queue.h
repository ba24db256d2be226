// A bounded queue that one producer thread fills ahead of its consumer: the loaders run an
// epoch's batches on it. start() cancels and joins the producer before it, and an error the
// producer throws reaches the consumer after the items made before it, as if it were in line.
#pragma once
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <mutex>
#include <optional>
#include <thread>
#include <utility>

namespace exfusion {

template <class T>
class PrefetchQueue {
 public:
  // Hands an item to the consumer, waiting while `capacity` items are ahead of it. False once
  // the queue is stopped: the producer should then return.
  using Push = std::function<bool(T)>;

  explicit PrefetchQueue(int64_t capacity) : capacity_(capacity < 1 ? 1 : capacity) {}
  ~PrefetchQueue() { stop(); }
  PrefetchQueue(const PrefetchQueue&) = delete;
  PrefetchQueue& operator=(const PrefetchQueue&) = delete;

  // Stops the producer in progress, drops what it queued, and runs produce(push) on a fresh
  // thread until it returns or throws.
  void start(std::function<void(const Push&)> produce) {
    stop();
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      cancel_ = false;
      finished_ = false;
      error_ = nullptr;
    }
    producer_ = std::thread([this, produce = std::move(produce)] {
      const Push push = [this](T item) {
        std::unique_lock<std::mutex> lock(mutex_);
        changed_.wait(lock,
                      [&] { return cancel_ || static_cast<int64_t>(queue_.size()) < capacity_; });
        if (cancel_) return false;
        queue_.push_back(std::move(item));
        changed_.notify_all();
        return true;
      };
      std::exception_ptr error;
      try {
        produce(push);
      } catch (...) {
        error = std::current_exception();
      }
      const std::lock_guard<std::mutex> lock(mutex_);
      error_ = error;
      finished_ = true;
      changed_.notify_all();
    });
  }

  // The next item; nullopt once the producer has returned and its items are taken. Rethrows
  // the producer's error in its place.
  std::optional<T> next() {
    std::unique_lock<std::mutex> lock(mutex_);
    changed_.wait(lock, [&] { return !queue_.empty() || finished_; });
    if (!queue_.empty()) {
      auto item = std::move(queue_.front());
      queue_.pop_front();
      changed_.notify_all();
      return item;
    }
    if (error_) std::rethrow_exception(error_);
    return std::nullopt;
  }

  // Cancels the producer (its next push returns false), joins it and empties the queue.
  void stop() {
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      cancel_ = true;
      changed_.notify_all();
    }
    if (producer_.joinable()) producer_.join();
    const std::lock_guard<std::mutex> lock(mutex_);
    queue_.clear();
    finished_ = true;
    error_ = nullptr;
  }

 private:
  int64_t capacity_;
  std::thread producer_;
  std::mutex mutex_;
  std::condition_variable changed_;
  std::deque<T> queue_;
  bool cancel_ = false;
  bool finished_ = true;
  std::exception_ptr error_;
};

}  // namespace exfusion
