#!/usr/bin/env bash
# The ALL issue's background ablation: one row a recipe (shipped all4 bundles and the records kept without weights),
# own test split x background conditions x Grad-CAM mass x C-NMC, written to reports/ablation-all4-background.md.
# Every row's figures are that bundle's own audits (scripts/audit_all4_cells.sh; `shift` for the noaug model).
#   bash scripts/ablation_all4_background.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/_venv.sh
OUT=reports/ablation-all4-background.md
{
  echo "# all4: does the model read the cells or the background? (recipe x own test split x background conditions)"
  echo
  echo "Written by scripts/ablation_all4_background.sh (python -m leukoview compare --section cells). Rows, in order:"
  echo "field model without augmentation; field model with acquisition augmentation (stain, blur, scale);"
  echo "the same + background swap (configs/all4_efficientnet_lite0_bgswap.yaml; record without weights);"
  echo "cell-level model (mean of cell logits); + field head with one swapped copy (shipped, recommended);"
  echo "field-level fine-tune; + field head; field-level training from ImageNet + field head (records)."
  echo "Drops are the test balanced accuracy unshifted minus shifted; CAM = Grad-CAM mass on stained pixels."
  echo
  "$VENV/bin/python" -m leukoview compare --section cells --records --markdown \
    --models-dir models reports reports/ablation-all4-cells-head \
    --model all4-efficientnet_lite0-noaug all4-efficientnet_lite0 all4-efficientnet_lite0-bgswap \
            all4-efficientnet_lite0-cells all4-efficientnet_lite0-cells-fieldhead all4-efficientnet_lite0-cells-mil \
            all4-efficientnet_lite0-cells-mil-fieldhead all4-efficientnet_lite0-cells-milfull-fieldhead
} > "$OUT"
echo "wrote $OUT"
