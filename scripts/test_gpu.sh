#!/usr/bin/env bash
# The GPU machine's tests: builds the test binary against the machine's own torch (python3's,
# CUDA-enabled, in build-gpu/ beside bench/compare_gpu.sh's build) and runs the tests that need
# a CUDA device (ctest label gpu: exfusion_gpu_tests, from tests/**/*_gpu.cpp): every kernel
# against its reference, graphed and kernel runs against eager ones.
# Each test runs in a process of its own (ctest), so a kernel fault that poisons the CUDA
# context fails its own test only. Output goes to $OUT (or bench-results/): gpu_tests.log.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-bench-results}
mkdir -p "$out"
EXFUSION_PYTHON=python3 EXFUSION_BUILD_DIR=build-gpu EXFUSION_BUILD_TARGETS=exfusion_gpu_tests \
  scripts/build.sh >"$out/test_build.log" 2>&1 ||
  { tail -30 "$out/test_build.log"; exit 1; }
status=0
ctest --test-dir build-gpu -L gpu \
  --output-on-failure --timeout 300 >"$out/gpu_tests.log" 2>&1 || status=$?
sed -n '/tests passed, /,$p' "$out/gpu_tests.log"
[ "$status" -eq 0 ] || grep -E "\*\*\*|Failed|Exception" "$out/gpu_tests.log" | head -40 || true
# Here a skip means the machine has no usable CUDA device, so these tests did not run.
if grep -q '(Skipped)' "$out/gpu_tests.log"; then
  echo "test_gpu.sh: tests were skipped: is there a CUDA device?" >&2
  [ "$status" -ne 0 ] || status=1
fi
exit "$status"
