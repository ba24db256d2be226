#!/usr/bin/env bash
# The CPU test suite built with AddressSanitizer and UndefinedBehaviorSanitizer (our code; LibTorch
# is not instrumented) in build-sanitize/, then run: out-of-bounds reads, use after free and
# undefined behaviour in the readers, the trainer or the CLI fail the run. No CUDA kernels and
# no Python interop tests here (the interpreter would need the ASan runtime preloaded).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
build_dir=build-sanitize
source scripts/cuda_toolkit.sh
use_cuda_toolkit
# -g1: line tables are all a sanitizer report needs for its stack; full debug information only
# makes the objects larger and slower to build.
if [ ! -f "$build_dir/build.ninja" ]; then
  cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1" -DEXFUSION_SANITIZE=address,undefined \
    -DEXFUSION_CUDA_KERNELS=OFF >"$build_dir.configure.log" 2>&1 ||
    { cat "$build_dir.configure.log" >&2; exit 1; }
fi
cmake --build "$build_dir" -j "$(nproc)" --target exfusion exfusion_tests
# Leak checking is off: LibTorch keeps process-lifetime allocations (its registries) that
# LeakSanitizer would report at exit. halt_on_error makes every other finding fatal.
# detect_container_overflow=0: std::vector annotations are wrong across the uninstrumented
# LibTorch boundary (a vector grown on one side, read on the other).
export ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:abort_on_error=1:detect_odr_violation=0:detect_container_overflow=0"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
# Only the CPU binary is built here: its GPU twin's NOT_BUILT placeholder is skipped too. The
# end-to-end runs labelled `slow` (CMakeLists.txt) are left to the release suite
# (scripts/test.sh runs them): instrumented, each would take several minutes.
ctest --test-dir "$build_dir" -LE 'gpu|slow' -E '^(python_interop|exfusion_gpu_tests_NOT_BUILT)$' --output-on-failure \
  -j "$(nproc)"
