#!/usr/bin/env bash
# Configures (once) and builds exfusion in build/ with Ninja; reruns only rebuild what
# changed. EXFUSION_BUILD_DIR and EXFUSION_PYTHON pick another directory or torch;
# EXFUSION_BUILD_TARGETS (space-separated, e.g. "exfusion") builds only those targets.
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${EXFUSION_BUILD_DIR:-build}
# The machine's CUDA toolkit, or the one setup.sh installed from PyPI (no CUDA kernels then).
source scripts/cuda_toolkit.sh
use_cuda_toolkit
if [ ! -f "$build_dir/build.ninja" ]; then
  cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    ${EXFUSION_PYTHON:+-DEXFUSION_PYTHON="$EXFUSION_PYTHON"} \
    ${EXFUSION_CUDA_FROM_PYPI:+-DEXFUSION_CUDA_KERNELS=OFF} >"$build_dir.configure.log" 2>&1 ||
    { cat "$build_dir.configure.log" >&2; exit 1; }
fi
cmake --build "$build_dir" -j "$(nproc)" ${EXFUSION_BUILD_TARGETS:+--target $EXFUSION_BUILD_TARGETS}
