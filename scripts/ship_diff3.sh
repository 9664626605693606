#!/usr/bin/env bash
# Audits of the three-laboratory differential after training (scripts/train_diff3.sh), and the external rows of the
# older leukocyte models beside it. External sets are evaluation only.
#   LEUKOVIEW_DATA_ROOT=../shared/data nohup bash scripts/ship_diff3.sh > ship_diff3.log 2>&1 &
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/_venv.sh
PY="$VENV/bin/python"
B="${B:-models/diff3-efficientnet_lite0-balanced}"
ROOT="${LEUKOVIEW_DATA_ROOT:-$(cd ../shared/data && pwd)}"
export LEUKOVIEW_DATA_ROOT="$ROOT"
[ "${SKIP_MEASURE:-0}" = 1 ] || "$PY" -m leukoview measure "$B"
"$PY" -m leukoview patients "$B"
"$PY" -m leukoview wrongtask "$B" --isolated-renders 500 --generated 400 --quiet  # before external: its flags count
"$PY" -m leukoview external "$ROOT/bccd_wbc" --bundle "$B" --quiet
"$PY" -m leukoview external "$ROOT/cnmc_sample" --bundle "$B" models/wbc9-efficientnet_lite0-reinhard \
  --map hem=lymphocyte --positive-folders all --quiet
"$PY" -m leukoview oodeval "$B" --quiet
"$PY" -m leukoview camstats "$B" --max-images 270 --quiet
"$PY" -m leukoview compare --section external --markdown
