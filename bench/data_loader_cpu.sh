#!/usr/bin/env bash
# Data loader throughput on this machine: DeiT's training pipeline (random-resized crop,
# flip, RandAugment, random erasing, Mixup/CutMix) over a tree of 224-px JPEGs, `exfusion data`
# against torchvision + timm (bench/data_peer.py), with 1 and 2 workers. One JSON line each.
# Usage: bench/data_loader_cpu.sh [TREE_DIR]   (EXFUSION_CLI pins the binary)
set -euo pipefail
cd "$(dirname "$0")/.."
cli=${EXFUSION_CLI:-build/exfusion}
tree=${1:-${TMPDIR:-/tmp}/exfusion-jpeg-tree}
batches=${BATCHES:-8}
.venv/bin/python bench/make_image_tree.py "$tree" --classes 8 --per-class 128 --size 224
for workers in 1 2; do
  "$cli" data --data "$tree" --batches "$batches" \
    --set model.in_chans=3 model.patch_size=16 model.img_size=224 model.num_classes=8 \
          data.format=folder data.preset=deit train.batch_size=64 data.workers="$workers" \
          train.label_smoothing=0.1
  .venv/bin/python bench/data_peer.py "$tree" --workers "$workers" --batch-size 64 \
    --batches "$batches"
done
