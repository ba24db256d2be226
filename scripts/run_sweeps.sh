#!/usr/bin/env bash
# Reruns the paper's ablations at this machine's scale (issue 14): every sweep under
# configs/sweeps/ one after another into runs/sweeps/<name>/, then the figures of each sweep
# and Figure 5 of one ExFusion-mb run. Resumable: rerun it after a kill and finished runs are
# skipped. Prints each sweep's table and the total wall time.
# Usage: scripts/run_sweeps.sh [SWEEP_NAME ...]   (default: all of configs/sweeps/*.yaml)
# EXFUSION_CLI=path/to/exfusion runs that binary instead of building build/exfusion (a copy
# keeps a long sweep on one build while the tree changes).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
if [ -z "${EXFUSION_CLI:-}" ]; then
  EXFUSION_BUILD_TARGETS=exfusion scripts/build.sh
  EXFUSION_CLI=build/exfusion
fi

if [ "$#" -gt 0 ]; then
  names=("$@")
else
  names=()
  for file in configs/sweeps/*.yaml; do names+=("$(basename "$file" .yaml)"); done
fi

start=$(date +%s)
for name in "${names[@]}"; do
  if [ "$name" = upcycling ] && [ ! -f runs/upcycling/dense/summary.json ]; then
    # The upcycling sweep continues one dense checkpoint; train it once.
    "$EXFUSION_CLI" train --config configs/upcycle-dense.yaml --out runs/upcycling/dense --force
  fi
  "$EXFUSION_CLI" sweep "configs/sweeps/$name.yaml" --out "runs/sweeps/$name"
  .venv/bin/python scripts/plot_metrics.py "runs/sweeps/$name"
  cat "runs/sweeps/$name/table.md"
done

# Figure 5: one ExFusion-mb run's fusion weights per layer and expert over training.
figure5_run=runs/sweeps/table6-variants/runs/mb/seed-1
if [ -f "$figure5_run/metrics.jsonl" ]; then
  .venv/bin/python scripts/plot_metrics.py "$figure5_run" --figure fusion-weights
fi
end=$(date +%s)
echo "run_sweeps: ${#names[@]} sweeps in $(( (end - start) / 60 )) min $(( (end - start) % 60 )) s"
