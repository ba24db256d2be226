#!/usr/bin/env bash
# The whole test suite: installs and builds what is missing, then runs ctest (GoogleTest
# binary plus the Python interop tests against the real safetensors and timm readers). The
# tests that need a CUDA device (label gpu) run on the GPU machine: scripts/test_gpu.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
ctest --test-dir build -LE gpu --output-on-failure -j "$(nproc)"
