#!/usr/bin/env bash
# Every audit the app shows, for an all4 bundle (the ALL issue): latency, the shift test (incl. the three
# background-removed conditions), Grad-CAM statistics, the wrong-task detector and the OOD evaluation, and the
# C-NMC sample scored as an external set (B-ALL blasts vs normal B-lymphoid cells; evaluation only), last so that
# its OOD flags include the wrong-task detector.
#   LEUKOVIEW_DATA_ROOT=../shared/data nohup bash scripts/audit_all4_cells.sh [BUNDLE] > audit_all4.log 2>&1 &
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/_venv.sh
PY="$VENV/bin/python"
B="${1:-models/all4-efficientnet_lite0-cells-fieldhead}"
"$PY" -m leukoview measure "$B"
"$PY" -m leukoview shift "$B" --quiet
"$PY" -m leukoview camstats "$B" --max-images 200 --quiet
"$PY" -m leukoview wrongtask "$B" --quiet
"$PY" -m leukoview oodeval "$B" --quiet
# after the wrong-task detector: the external set's OOD-flag figures include it
"$PY" -m leukoview external "$LEUKOVIEW_DATA_ROOT/cnmc_sample" --bundle "$B" --map hem=Benign --positive-folders all \
  --name cnmc_sample --quiet
"$PY" -m leukoview compare --section external --markdown
