"""Does an input choice explain a model's C-NMC result? The cnmc_sample cells scored at input sides 450 (as
published), 160, 96 and 64 px, on their black background and with it turned white: ROC-AUC of the suspicion score
(all vs hem), share OOD-flagged, share at or above the threshold. Evaluation only; nothing is fitted.

    python scripts/probes/probe_cnmc_inputs.py [BUNDLE]   (default models/all4-efficientnet_lite0-cells)
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from leukoview.jobs.predict import Predictor  # noqa: E402
from leukoview.primitives import settings  # noqa: E402
from leukoview.primitives.images import find_images, load_image  # noqa: E402
from leukoview.primitives.metrics import roc_auc  # noqa: E402


def main() -> int:
    bundle = sys.argv[1] if len(sys.argv) > 1 else "models/all4-efficientnet_lite0-cells"
    p = Predictor(bundle)
    files = find_images(Path(settings.data_root()) / "cnmc_sample")
    y = np.array([f.parent.name == "all" for f in files], int)
    images = [load_image(f) for f in files]
    for side in (450, 160, 96, 64):
        for background in ("black", "white"):
            views = []
            for im in images:
                v = im if side == im.width else im.resize((side, side), Image.BILINEAR)
                if background == "white":
                    a = np.asarray(v).copy()
                    a[a.sum(2) < 40] = (235, 235, 240)
                    v = Image.fromarray(a)
                views.append(v)
            out = p.predict_batch(views)
            print(f"{side:>4} px, {background}: ROC-AUC {roc_auc(y, out['suspicion']):.3f}, OOD-flagged "
                  f"{out['ood_flag'].mean():.0%}, positive {out['decision'].mean():.0%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
