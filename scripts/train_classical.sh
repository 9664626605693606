#!/usr/bin/env bash
# Fit the classical models of the all4 zoo (issue 5) on both feature sets; each writes models/all4-<model>[-lite0_embed].
# Usage: LEUKOVIEW_DATA_ROOT=../shared/data nohup scripts/train_classical.sh > classical.log 2>&1 &
set -u
cd "$(dirname "$0")/.."
source scripts/_venv.sh
for f in "" _lite0_embed; do
  for m in ridge ridge_cv lda svc xgboost; do
    echo "=== $(date -u +%H:%M:%S) $m$f"
    "$VENV/bin/python" -m leukoview train --config "configs/zoo/all4_$m$f.yaml" || echo "!!! $m$f failed"
  done
done
echo "=== $(date -u +%H:%M:%S) done"
