#!/usr/bin/env bash
# The main job: installs and builds what is missing, then runs `exfusion train` with the
# given arguments (none: ViT + ExFusion-mb, N=4, δ=0.95 on Fashion-MNIST, fused and evaluated).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# Only the CLI: the test binaries are the test command's (scripts/test.sh).
EXFUSION_BUILD_TARGETS=exfusion scripts/build.sh >/dev/null
exec build/exfusion train "$@"
