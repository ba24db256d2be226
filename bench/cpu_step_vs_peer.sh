#!/usr/bin/env bash
# A model's training step on this machine against its peer in PyTorch, in alternating rounds:
# `exfusion bench` on a config and the same model, batch and sizes, fp32, in the library users
# train it with: bench/backbone_peer.py (timm) for model.kind swin and pvt_v2, bench/llama_peer.py
# (transformers) for llama. Each round runs ours, then the peer, and prints both JSON lines; the
# last line has every round's ratio of images/s (tokens/s for a language model) and their
# median: on a shared machine whose speed drifts, a ratio of neighbouring runs holds where
# single times do not.
# Usage: bench/cpu_step_vs_peer.sh [CONFIG] [STEPS] [ROUNDS]   (EXFUSION_CLI pins the binary;
#        CONFIG defaults to configs/fmnist-swin-dense.yaml)
set -euo pipefail
cd "$(dirname "$0")/.."
cli=${EXFUSION_CLI:-build/exfusion}
config=${1:-configs/fmnist-swin-dense.yaml}
steps=${2:-30}
rounds=${3:-3}
kind=$(.venv/bin/python -c 'import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))["model"]["kind"])' "$config")
case "$kind" in
  swin | pvt_v2) peer=bench/backbone_peer.py metric=img_per_s ;;
  llama) peer=bench/llama_peer.py metric=tokens_per_s ;;
  *) echo "cpu_step_vs_peer.sh: no peer for model.kind $kind (swin, pvt_v2, llama)" >&2; exit 2 ;;
esac
results=()
for _ in $(seq "$rounds"); do
  ours=$("$cli" bench --config "$config" --warmup 5 --steps "$steps" | tail -1)
  echo "$ours"
  theirs=$(.venv/bin/python "$peer" "$config" --warmup 5 --steps "$steps" | tail -1)
  echo "$theirs"
  results+=("$ours" "$theirs")
done
.venv/bin/python - "$config" "$metric" "${results[@]}" <<'PY'
import json, statistics, sys
config, metric = sys.argv[1], sys.argv[2]
lines = [json.loads(line) for line in sys.argv[3:]]
ours, peer = lines[0::2], lines[1::2]
ratios = [a[metric] / b[metric] for a, b in zip(ours, peer)]
print(json.dumps({"config": config, "metric": metric,
                  "ours": [a[metric] for a in ours], "peer": [b[metric] for b in peer],
                  "ratios": ratios, "median_ratio": statistics.median(ratios)}))
PY
