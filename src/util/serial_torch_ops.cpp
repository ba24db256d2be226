// SerialTorchOpsGuard (see serial_torch_ops.h). LibTorch runs a CPU operator on an OpenMP team,
// and each thread that starts one gets a team of its own. A loader thread's team beside the
// trainer's puts more OpenMP threads than cores in the process; libgomp then stops spinning at
// its barriers and sleeps on a futex at each one, hundreds of times per step: on 2 cores the
// main job ran at two thirds of its step rate (docs/benchmarks.md, 2026-12-03).
#include "exfusion/util/serial_torch_ops.h"

#include <ATen/Parallel.h>
#include <dlfcn.h>

namespace exfusion {
namespace {

using SetOpenMpThreads = void (*)(int);

// omp_set_num_threads of the OpenMP runtime LibTorch loaded (the wheel bundles its own
// libgomp.so.1), looked up rather than linked so that no second runtime is ever loaded beside
// it. Null where LibTorch was built on its native thread pool: no OpenMP team to avoid there.
SetOpenMpThreads openmp_set_num_threads() {
  static const auto function =
      reinterpret_cast<SetOpenMpThreads>(dlsym(RTLD_DEFAULT, "omp_set_num_threads"));
  return function;
}

}  // namespace

SerialTorchOpsGuard::SerialTorchOpsGuard() {
  // at::get_num_threads first: it initialises LibTorch's per-thread setting, which would
  // otherwise reset this thread to the process's count at its first operator.
  previous_threads_ = at::get_num_threads();
  if (const auto set = openmp_set_num_threads()) set(1);
}

SerialTorchOpsGuard::~SerialTorchOpsGuard() {
  if (const auto set = openmp_set_num_threads()) set(previous_threads_);
}

}  // namespace exfusion
