#!/usr/bin/env bash
# `exfusion generate` against transformers' generate on the same model, in alternating rounds:
# ours continues PROMPT greedily for TOKENS new tokens through its key/value cache (EOS ignored),
# then bench/llama_generate_peer.py makes as many from the same prompt ids with the run's hf/
# directory. Each round prints both JSON lines; the last line has every round's ratio of new
# tokens/s (the prompt's forward included on both sides) and their median.
# Usage: bench/generate_vs_peer.sh RUN [TOKENS] [ROUNDS] [PROMPT]   (EXFUSION_CLI pins the binary;
#        RUN: a Llama run directory with hf/, or an MoE run after `exfusion export`)
set -euo pipefail
cd "$(dirname "$0")/.."
cli=${EXFUSION_CLI:-build/exfusion}
run=${1:?usage: bench/generate_vs_peer.sh RUN [TOKENS] [ROUNDS] [PROMPT]}
tokens=${2:-128}
rounds=${3:-3}
prompt=${4:-"A fool and his money are soon parted, but"}
if [[ ! -f "$run/hf/config.json" ]]; then
  echo "generate_vs_peer.sh: $run/hf/config.json missing (a dense Llama run writes it; an MoE run: exfusion export $run)" >&2
  exit 2
fi
results=()
for _ in $(seq "$rounds"); do
  ours=$("$cli" generate "$run" --prompt "$prompt" --max-new-tokens "$tokens" --ignore-eos |
         .venv/bin/python -c 'import json, sys; print(json.dumps(json.load(sys.stdin)))')
  echo "$ours"
  ids=$(.venv/bin/python -c 'import json, sys; print(",".join(map(str, json.loads(sys.argv[1])["prompt_ids"])))' "$ours")
  theirs=$(.venv/bin/python bench/llama_generate_peer.py "$run/hf" --prompt-ids "$ids" \
           --max-new-tokens "$tokens" | tail -1)
  echo "$theirs"
  results+=("$ours" "$theirs")
done
.venv/bin/python - "$run" "${results[@]}" <<'PY'
import json, statistics, sys
run = sys.argv[1]
lines = [json.loads(line) for line in sys.argv[2:]]
ours, peer = lines[0::2], lines[1::2]
ratios = [a["tokens_per_s"] / b["tokens_per_s"] for a, b in zip(ours, peer)]
print(json.dumps({"run": run, "metric": "new tokens/s",
                  "ours": [a["tokens_per_s"] for a in ours],
                  "peer": [b["tokens_per_s"] for b in peer],
                  "ratios": ratios, "median_ratio": statistics.median(ratios)}))
PY
