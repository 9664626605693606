#!/usr/bin/env bash
# The cross-laboratory ablation (diff3: PBC + LMU + JHH), one training after another (never two at once):
# the source-balanced recipe (candidate for shipping, -> models/) and the same plus the scanner adversary
# (record -> reports/ablation-diff3/). Run in the background: nohup bash scripts/train_diff3.sh > diff3.log 2>&1 &
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/_venv.sh
export LEUKOVIEW_DATA_ROOT="${LEUKOVIEW_DATA_ROOT:-$(cd ../shared/data && pwd)}"
for cfg in configs/diff3_efficientnet_lite0_balanced.yaml configs/diff3_efficientnet_lite0_balanced_adversary.yaml; do
  echo "=== $(date -u +%FT%TZ) $cfg"
  "$VENV/bin/python" -m leukoview train --config "$cfg" --quiet
done
echo "=== $(date -u +%FT%TZ) done"
