#!/usr/bin/env bash
# Train every network of the all4 model zoo (issue 5) one after the other; each writes models/all4-<arch>.
# Usage: LEUKOVIEW_DATA_ROOT=../shared/data nohup scripts/train_zoo.sh [arch ...] > zoo.log 2>&1 &
# With no arguments, every configs/zoo/all4_*.yaml in a fixed order (fast ones first).
set -u
cd "$(dirname "$0")/.."
source scripts/_venv.sh
archs=("$@")
[ ${#archs[@]} -eq 0 ] && archs=(cnn16 cnn32 cnn_dropout cnn_bn unet_classifier resnet18 efficientnet_b3 vgg16)
for a in "${archs[@]}"; do
  echo "=== $(date -u +%H:%M:%S) $a"
  "$VENV/bin/python" -m leukoview train --config "configs/zoo/all4_$a.yaml" || echo "!!! $a failed"
done
echo "=== $(date -u +%H:%M:%S) done"
