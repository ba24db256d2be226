#!/usr/bin/env bash
# Builds exfusion against the machine's own torch (python3's, CUDA-enabled) and, in the same
# run, times our training step and the peer benchmark (timm in Python, eager and compiled)
# for the same model and batch, then prints one side-by-side table (bench/compare_table.py).
# Ours: dense with and without the LayerNorm kernels and the bias-gradient epilogue,
# ExFusion-mb N=4 with and without the expert kernels, MoE-4-2, EWA N=4, and dense and ExFusion-mb N=4
# with the step captured in a CUDA graph, for ViT-B/16 at batch 128 and DeiT-Ti/16 at 256,
# then ExFusion-mb N = 8, 16, 32 on DeiT-Ti (overhead vs N).
# Usage: bench/compare_gpu.sh [PEER_SCRIPT]   (default .peer/timm_anchor.py, see ../shared/bench)
# Results go to $OUT (or bench-results/): build.log, exfusion.jsonl, rows.err (each row's
# stderr), peer.jsonl, table.md (written once without the peer, then with it), and phases.txt
# (seconds per phase). A row that fails or runs past BENCH_ROW_TIMEOUT seconds (default 120) is
# logged to failures.log and the others still run, since GPU time is scarce; the script then
# exits 1 after printing the table.
set -euo pipefail
cd "$(dirname "$0")/.."
peer=${1:-.peer/timm_anchor.py}
[ -f "$peer" ] || { echo "compare_gpu.sh: peer benchmark '$peer' not found" >&2; exit 2; }
out=${OUT:-bench-results}
steps=${BENCH_STEPS:-20}
row_timeout=${BENCH_ROW_TIMEOUT:-120}
mkdir -p "$out"
: >"$out/phases.txt"
: >"$out/failures.log"
: >"$out/rows.err"
phase_start=$SECONDS
phase_done() {
  echo "$1 $((SECONDS - phase_start))" | tee -a "$out/phases.txt"
  phase_start=$SECONDS
}
# Only the CLI: the test binary is about 40 % of the compile and is not needed for timing.
EXFUSION_PYTHON=python3 EXFUSION_BUILD_DIR=build-gpu EXFUSION_BUILD_TARGETS=exfusion \
  scripts/build.sh >"$out/build.log" 2>&1 ||
  { tail -30 "$out/build.log"; exit 1; }
phase_done build

ours="$out/exfusion.jsonl"
: >"$ours"
bench() {
  local row status=0
  row=$(timeout -k 15 "$row_timeout" build-gpu/exfusion bench --steps "$steps" "$@" \
    2>"$out/row.err") || status=$?
  { echo "== exfusion bench $*"; cat "$out/row.err"; } >>"$out/rows.err"
  if [ "$status" -eq 0 ]; then
    echo "$row" | tee -a "$ours"
  else
    { echo "FAILED (exit $status): exfusion bench $*"; tail -5 "$out/row.err"; } |
      tee -a "$out/failures.log"
  fi
}
# The table through a temporary file, so that a call cut off mid-write keeps the last one.
table() {
  python3 bench/compare_table.py "$ours" "$1" >"$out/table.md.tmp" && mv "$out/table.md.tmp" "$out/table.md"
}
mb=(--ffn exfusion --variant mb)
for config in "base:128" "tiny:256"; do
  preset=${config%%:*}
  batch=${config##*:}
  bench --preset "$preset" --batch-size "$batch" --ffn dense
  bench --preset "$preset" --batch-size "$batch" --ffn dense --set train.layer_norm_kernels=false
  bench --preset "$preset" --batch-size "$batch" --ffn dense --set train.bias_grad_epilogue=false
  bench --preset "$preset" --batch-size "$batch" "${mb[@]}" --experts 4
  bench --preset "$preset" --batch-size "$batch" "${mb[@]}" --experts 4 --set train.expert_kernels=false
  bench --preset "$preset" --batch-size "$batch" --ffn moe --experts 4 --top-k 2
  bench --preset "$preset" --batch-size "$batch" --ffn ewa --experts 4
  bench --preset "$preset" --batch-size "$batch" --ffn dense --cuda-graph true
  bench --preset "$preset" --batch-size "$batch" "${mb[@]}" --experts 4 --cuda-graph true
done
for n in 8 16 32; do
  bench --preset tiny --batch-size 256 "${mb[@]}" --experts "$n"
done
phase_done ours
table /dev/null
python3 "$peer" --configs vit_base_patch16_224:128,deit_tiny_patch16_224:256 --compile 0,1 \
  --variants mb --steps "$steps" | tee "$out/peer.jsonl" ||
  echo "FAILED: the peer benchmark (see the lines above)" | tee -a "$out/failures.log"
phase_done peer
table "$out/peer.jsonl"
cat "$out/table.md"
if [ -s "$out/failures.log" ]; then
  echo "compare_gpu.sh: $(grep -c '^FAILED' "$out/failures.log") part(s) failed, see $out/failures.log" >&2
  exit 1
fi
