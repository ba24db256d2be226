#!/usr/bin/env bash
# Builds exfusion against the machine's own torch (python3's, CUDA-enabled) and, in the same
# run, times our training step and the peer benchmark (timm in Python, eager and compiled)
# for the same model and batch, then prints one side-by-side table (bench/compare_table.py).
# Usage: bench/compare_gpu.sh [PEER_SCRIPT]   (default .peer/timm_anchor.py, see ../shared/bench)
set -euo pipefail
cd "$(dirname "$0")/.."
peer=${1:-.peer/timm_anchor.py}
out=${OUT:-bench-results}
mkdir -p "$out"
EXFUSION_PYTHON=python3 EXFUSION_BUILD_DIR=build-gpu scripts/build.sh >"$out/build.log" 2>&1 ||
  { tail -30 "$out/build.log"; exit 1; }

ours="$out/exfusion.jsonl"
: >"$ours"
for config in "base:128" "tiny:256"; do
  preset=${config%%:*}
  batch=${config##*:}
  for ffn in "--ffn dense" "--ffn exfusion --variant mb --experts 4"; do
    build-gpu/exfusion bench --preset "$preset" --batch-size "$batch" $ffn --steps 20 | tee -a "$ours"
  done
done
python3 "$peer" --configs vit_base_patch16_224:128,deit_tiny_patch16_224:256 --compile 0,1 \
  --variants mb --steps 20 | tee "$out/peer.jsonl"
python3 bench/compare_table.py "$ours" "$out/peer.jsonl" | tee "$out/table.md"
