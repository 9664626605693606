#!/usr/bin/env bash
# The recipe screen of the 9-type leukocyte differential (issue 14): train each recipe of configs/ablation/ on a
# cheap budget, score it on the external set (another lab; evaluation only), and print the ablation table.
#   LEUKOVIEW_DATA_ROOT=../shared/data nohup bash scripts/ablation_wbc9.sh > ablation.log 2>&1 &
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/_venv.sh
EXTERNAL="${EXTERNAL:-$LEUKOVIEW_DATA_ROOT/bccd_wbc}"
for r in whole crop crop_acq crop_acq_lowres; do
  "$VENV/bin/python" -m leukoview train --config "configs/ablation/wbc9_$r.yaml" --quiet
  "$VENV/bin/python" -m leukoview external "$EXTERNAL" --bundle "reports/ablation-wbc9/$r" --quiet
done
"$VENV/bin/python" -m leukoview compare --section external --models-dir reports/ablation-wbc9 --markdown \
  | tee reports/ablation-wbc9/ablation.md
