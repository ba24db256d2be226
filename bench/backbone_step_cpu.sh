#!/usr/bin/env bash
# A backbone's training step on this machine against its peer, in alternating rounds:
# `exfusion bench` on a config (default configs/fmnist-swin-dense.yaml; the fmnist-pvt-v2 ones
# likewise) and bench/backbone_peer.py, the same model in timm, same batch and image size, fp32.
# Each round runs ours, then the peer, and prints both JSON lines; the last line has every
# round's ratio of images/s and their median: on a shared machine whose speed drifts, a ratio of
# neighbouring runs holds where single times do not.
# Usage: bench/backbone_step_cpu.sh [CONFIG] [STEPS] [ROUNDS]   (EXFUSION_CLI pins the binary)
set -euo pipefail
cd "$(dirname "$0")/.."
cli=${EXFUSION_CLI:-build/exfusion}
config=${1:-configs/fmnist-swin-dense.yaml}
steps=${2:-30}
rounds=${3:-3}
results=()
for _ in $(seq "$rounds"); do
  ours=$("$cli" bench --config "$config" --warmup 5 --steps "$steps" | tail -1)
  echo "$ours"
  peer=$(.venv/bin/python bench/backbone_peer.py "$config" --warmup 5 --steps "$steps" | tail -1)
  echo "$peer"
  results+=("$ours" "$peer")
done
.venv/bin/python - "$config" "${results[@]}" <<'PY'
import json, statistics, sys
lines = [json.loads(line) for line in sys.argv[2:]]
ours, peer = lines[0::2], lines[1::2]
ratios = [a["img_per_s"] / b["img_per_s"] for a, b in zip(ours, peer)]
print(json.dumps({"config": sys.argv[1],
                  "ours_img_per_s": [a["img_per_s"] for a in ours],
                  "peer_img_per_s": [b["img_per_s"] for b in peer],
                  "ratios": ratios, "median_ratio": statistics.median(ratios)}))
PY
