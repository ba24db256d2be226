// A scoped guard, in the style of c10::InferenceMode, that keeps LibTorch's CPU operators on
// the thread that calls them: for the loader threads, whose operators must not start OpenMP
// teams of their own beside the training thread's (why: serial_torch_ops.cpp).
#pragma once

namespace exfusion {

// While a guard lives, every LibTorch CPU operator issued on this thread runs on this thread
// alone; other threads keep their intra-op parallelism. The thread's previous setting comes
// back when the guard ends.
class SerialTorchOpsGuard {
 public:
  SerialTorchOpsGuard();
  ~SerialTorchOpsGuard();
  SerialTorchOpsGuard(const SerialTorchOpsGuard&) = delete;
  SerialTorchOpsGuard& operator=(const SerialTorchOpsGuard&) = delete;

 private:
  int previous_threads_ = 1;
};

}  // namespace exfusion
