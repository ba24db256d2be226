#!/usr/bin/env bash
# The T5 training step on this machine against its peer in one run: `exfusion bench` on the
# dense fortunes T5 (configs/t5-fortunes-dense.yaml, plain AdamW so that both sides run the
# same optimiser) and bench/t5_peer.py, the same model in `transformers`, same batch and
# lengths, fp32. Prints our JSON line, the peer's, then one line with the ratio of target
# tokens/s. Usage: bench/t5_step_cpu.sh [STEPS]   (EXFUSION_CLI pins the binary)
set -euo pipefail
cd "$(dirname "$0")/.."
cli=${EXFUSION_CLI:-build/exfusion}
steps=${1:-20}
ours=$("$cli" bench --config configs/t5-fortunes-dense.yaml --set train.optimizer=adamw \
  train.lr=0.001 --warmup 3 --steps "$steps" | tail -1)
echo "$ours"
peer=$(.venv/bin/python bench/t5_peer.py --batch 32 --input-length 128 --target-length 29 \
  --d-model 256 --d-kv 32 --d-ff 512 --heads 8 --layers 4 --vocab 8192 --warmup 3 \
  --steps "$steps" | tail -1)
echo "$peer"
.venv/bin/python - "$ours" "$peer" <<'PY'
import json, sys
ours, peer = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(json.dumps({"ours_tokens_per_s": ours["tokens_per_s"],
                  "peer_tokens_per_s": peer["tokens_per_s"],
                  "ratio": ours["tokens_per_s"] / peer["tokens_per_s"]}))
PY
