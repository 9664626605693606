#!/usr/bin/env bash
# Train the shipped 9-type leukocyte differential (issue 14), then run every audit the app shows for it, and score
# the external set (another lab; evaluation only) with it and with the older wbc5 bundles for comparison.
#   LEUKOVIEW_DATA_ROOT=../shared/data nohup bash scripts/ship_wbc9.sh > ship_wbc9.log 2>&1 &
# Another recipe: CONFIG=configs/wbc9_efficientnet_lite0_reinhard.yaml B=models/wbc9-efficientnet_lite0-reinhard
# (SKIP_TRAIN=1: the audits only, on a bundle already trained).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/_venv.sh
PY="$VENV/bin/python"
B="${B:-models/wbc9-efficientnet_lite0}"
CONFIG="${CONFIG:-configs/wbc9_efficientnet_lite0.yaml}"
EXTERNAL="${EXTERNAL:-$LEUKOVIEW_DATA_ROOT/bccd_wbc}"
[ "${SKIP_TRAIN:-0}" = 1 ] || "$PY" -m leukoview train --config "$CONFIG" --quiet
"$PY" -m leukoview measure "$B"
"$PY" -m leukoview wrongtask "$B" --isolated-renders 500 --generated 400 --quiet  # before external: its flags count there
"$PY" -m leukoview external "$EXTERNAL" --bundle "$B" --quiet
"$PY" -m leukoview external "$EXTERNAL" --bundle models/wbc5-efficientnet_lite0 models/wbc5-efficientnet_lite0-noaug \
  --map Neutrophil=seg_neutrophil --quiet
"$PY" -m leukoview oodeval "$B" --quiet
"$PY" -m leukoview camstats "$B" --max-images 270 --quiet
"$PY" -m leukoview shift "$B" --max-images 450 --quiet
"$PY" -m leukoview compare --section external --markdown
