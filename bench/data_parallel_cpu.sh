#!/usr/bin/env bash
# Data parallel on this machine's CPUs (issue 15): the main job's model (ViT + ExFusion-mb,
# N = 4) trained for STEPS steps at one global batch, by 1 process with all cores and by 2 Gloo
# ranks launched by torchrun with half the cores each. Prints one JSON object: ms per step of
# each, and the 2-rank run's gradient bytes and the time its all-reduce takes alone.
# Usage: bench/data_parallel_cpu.sh [STEPS=60] [GLOBAL_BATCH=128]
set -euo pipefail
cd "$(dirname "$0")/.."
steps=${1:-60}
global=${2:-128}
scripts/setup.sh >&2
EXFUSION_BUILD_TARGETS=exfusion scripts/build.sh >&2
cores=$(nproc)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
common=(--set train.epochs=1 "train.max_steps=$steps" train.log_every=10 train.tensorboard=false)
build/exfusion train --out "$out/one" "${common[@]}" --set "train.batch_size=$global" \
  "train.threads=$cores" >&2
.venv/bin/torchrun --nproc-per-node=2 --master-addr=127.0.0.1 --master-port=29531 --no-python \
  build/exfusion train --out "$out/two" "${common[@]}" --set "train.batch_size=$((global / 2))" \
  "train.threads=$((cores / 2 > 0 ? cores / 2 : 1))" >&2
.venv/bin/python - "$out" "$steps" "$global" "$cores" <<'PY'
import json, pathlib, sys
out, steps, global_batch, cores = pathlib.Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
one = json.loads((out / "one" / "summary.json").read_text())
two = json.loads((out / "two" / "summary.json").read_text())
dp = two["data_parallel"]
print(json.dumps({
    "steps": steps, "global_batch": global_batch, "cores": cores,
    "one_process_ms_per_step": 1000 * one["train_seconds"] / one["steps"],
    "two_ranks_ms_per_step": 1000 * two["train_seconds"] / two["steps"],
    "two_ranks_gradient_bytes": dp["gradient_bytes"],
    "two_ranks_gradient_allreduce_ms": dp["gradient_allreduce_ms"],
    "replicas_identical": dp["replicas"]["identical"],
    "one_process_test_accuracy": one["fused_test_accuracy"],
    "two_ranks_test_accuracy": two["fused_test_accuracy"],
}, indent=2))
PY
