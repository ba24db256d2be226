#!/usr/bin/env bash
# The upcycling comparison users can rerun (issue 12): trains the dense ViT of
# configs/upcycle-dense.yaml, continues it for the same number of steps by each method in
# configs/upcycle-*.yaml, and prints a Markdown table of test accuracy (the fused model's where
# the run fuses), trainable parameters, stored values (parameters and buffers such as DeRS's
# sparse positions), deployed parameters and ms per step from each summary.json.
# Usage: scripts/compare_upcycling.sh [--set key=value ...]  (passed to every run)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
EXFUSION_BUILD_TARGETS=exfusion scripts/build.sh
out=runs/upcycling
methods=(dense-continued moe-copy moe-drop moe-noise exfusion-copy exfusion-drop ders-moe-sparse
         ders-moe-lowrank ders-exfusion-sparse)

build/exfusion train --config configs/upcycle-dense.yaml --out "$out/dense" --force "$@"
for method in "${methods[@]}"; do
  build/exfusion train --config "configs/upcycle-$method.yaml" --out "$out/$method" --force "$@"
done

python3 - "$out" dense "${methods[@]}" <<'PY' | tee "$out/table.md"
import json, sys
out, names = sys.argv[1], sys.argv[2:]
print("| run | test accuracy | trainable params | stored values | deployed params | ms/step |")
print("|---|---|---|---|---|---|")
for name in names:
    s = json.load(open(f"{out}/{name}/summary.json"))
    accuracy = s.get("fused_test_accuracy", s["test_accuracy"])
    deployed = s.get("params_fused", s["params_train"])
    ms = 1000.0 * s["train_seconds"] / s["steps"]
    stored = s["params_stored"]
    print(f"| {name} | {100 * accuracy:.2f}% | {s['params_train']:,} | {stored:,} | {deployed:,} "
          f"| {ms:.1f} |")
PY
