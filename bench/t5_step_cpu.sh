#!/usr/bin/env bash
# The T5 training step on this machine against its peer, in alternating rounds: `exfusion bench`
# on the dense fortunes T5 (configs/t5-fortunes-dense.yaml, plain AdamW so that both sides run
# the same optimiser) and bench/t5_peer.py, the same model in `transformers`, same batch and
# lengths, fp32. Each round runs ours, then the peer, and prints both JSON lines; the last line
# has every round's ratio of target tokens/s and their median: on a shared machine whose speed
# drifts, a ratio of neighbouring runs holds where single times do not.
# Usage: bench/t5_step_cpu.sh [STEPS] [ROUNDS]   (EXFUSION_CLI pins the binary)
set -euo pipefail
cd "$(dirname "$0")/.."
cli=${EXFUSION_CLI:-build/exfusion}
steps=${1:-20}
rounds=${2:-3}
results=()
for _ in $(seq "$rounds"); do
  ours=$("$cli" bench --config configs/t5-fortunes-dense.yaml --set train.optimizer=adamw \
    train.lr=0.001 --warmup 3 --steps "$steps" | tail -1)
  echo "$ours"
  peer=$(.venv/bin/python bench/t5_peer.py --batch 32 --input-length 128 --target-length 29 \
    --d-model 256 --d-kv 32 --d-ff 512 --heads 8 --layers 4 --vocab 8192 --warmup 3 \
    --steps "$steps" | tail -1)
  echo "$peer"
  results+=("$ours" "$peer")
done
.venv/bin/python - "${results[@]}" <<'PY'
import json, statistics, sys
lines = [json.loads(line) for line in sys.argv[1:]]
ours, peer = lines[0::2], lines[1::2]
ratios = [a["tokens_per_s"] / b["tokens_per_s"] for a, b in zip(ours, peer)]
print(json.dumps({"ours_tokens_per_s": [a["tokens_per_s"] for a in ours],
                  "peer_tokens_per_s": [b["tokens_per_s"] for b in peer],
                  "ratios": ratios, "median_ratio": statistics.median(ratios)}))
PY
