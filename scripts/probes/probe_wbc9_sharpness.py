"""Diagnostics behind the framing and sharpening runs of the wbc9 model (README, "Another lab's slides"), written to
reports/probe-wbc9-sharpness.md:

1. the located crop's side as a share of the image's shorter side, per folder (wbc5 train, pbc_extra, BCCD);
2. inference-only variants of the shipped model's colour step on BCCD (a weaker contrast stretch, an unsharp
   mask after it): normal cells called positive, called platelet, and called their own type. EVALUATION ONLY: the
   variants change nothing shipped; a recipe picked from this table is no longer measured by BCCD untouched;
3. mid-scale band energy (difference of Gaussians, sigma 1.5 and 4, over the grey spread) of what the network is
   given, PBC/LMU training crops against BCCD: is BCCD blurrier after the pipeline?

    LEUKOVIEW_DATA_ROOT=../shared/data python scripts/probes/probe_wbc9_sharpness.py
"""
from __future__ import annotations

import collections
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter
from scipy import ndimage

from leukoview.jobs.predict import Predictor
from leukoview.models import transforms
from leukoview.primitives import augment, segment
from leukoview.primitives.images import find_images, load_image
from leukoview.primitives.settings import data_root

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "models" / "wbc9-efficientnet_lite0-reinhard"
OWN = {"Neutrophil": "neutrophil", "Eosinophil": "eosinophil", "Lymphocyte": "lymphocyte", "Monocyte": "monocyte",
       "Basophil": "basophil"}


def side_shares(root: Path, per_folder: int = 60) -> list[str]:
    rows = ["| folder | cell found | crop side / shorter side: 2nd, 10th, 50th, 90th percentile |", "|---|---|---|"]
    folders = [*sorted((root / "wbc5" / "train").iterdir()), *sorted((root / "pbc_extra").iterdir()),
               *sorted((root / "bccd_wbc").iterdir())]
    for folder in (f for f in folders if f.is_dir()):
        shares, found = [], 0
        files = find_images(folder)[:per_folder]
        for path in files:
            img = load_image(path)
            crop = segment.locate_cell(img)
            shares.append(crop.side / min(img.size))
            found += crop.found
        q = np.percentile(shares, [2, 10, 50, 90])
        rows.append(f"| {folder.relative_to(root)} | {found}/{len(files)} | {', '.join(f'{v:.2f}' for v in q)} |")
    return rows


def variants(p: Predictor, colour: dict) -> dict:
    def stretch(floor):
        def run(arr):
            old, augment.STD_FLOOR = augment.STD_FLOOR, floor
            try:
                return np.asarray(augment.normalise_lab(Image.fromarray(arr), mean=colour["target_mean"],
                                                        std=colour["target_std"]))
            finally:
                augment.STD_FLOOR = old
        return run

    def unsharp(radius, percent):
        return lambda arr: np.asarray(Image.fromarray(stretch(augment.STD_FLOOR)(arr)).filter(
            ImageFilter.UnsharpMask(radius=radius, percent=percent, threshold=0)))

    return {"shipped colour step (spread stretched at most 5x)": stretch(augment.STD_FLOOR),
            "spread stretched at most 2x": stretch(0.5), "spread never stretched": stretch(1.0),
            "shipped + unsharp mask r2 100%": unsharp(2, 100), "shipped + unsharp mask r2 200%": unsharp(2, 200),
            "shipped + unsharp mask r4 150%": unsharp(4, 150)}


def main() -> None:
    root = data_root()
    p = Predictor(BUNDLE)
    colour = p.spec["colour"]
    uncoloured = {k: v for k, v in p.spec.items() if k != "colour"}
    bccd = [(folder, transforms.resize_array(load_image(path), uncoloured))
            for folder in OWN for path in find_images(root / "bccd_wbc" / folder)]
    out = ["# wbc9 framing and sharpness diagnostics", "", f"Written by scripts/probes/probe_wbc9_sharpness.py; model "
           f"{BUNDLE.name}; BCCD for evaluation only ({len(bccd)} cells).", "", "## Located crop side", "",
           *side_shares(root), "", "## Inference-only variants of the colour step on BCCD", "",
           "| variant | called positive | called platelet | " + " | ".join(f"{k} own type" for k in OWN) + " |",
           "|---|---|---|" + "---|" * len(OWN)]
    for name, fn in variants(p, colour).items():
        res = p.predict_prepared([fn(a) for _, a in bccd])
        called = [p.classes[i] for i in res["probs"].argmax(1)]
        own = collections.defaultdict(list)
        for (folder, _), c in zip(bccd, called, strict=True):
            own[folder].append(c == OWN[folder])
        out.append(f"| {name} | {res['decision'].mean():.3f} | {np.mean([c == 'platelet' for c in called]):.3f} | "
                   + " | ".join(f"{np.mean(own[k]):.2f}" for k in OWN) + " |")
    split = p.bundle.split()
    train = split[split["split"] == "train"].sample(400, random_state=0)["file"]
    finish = variants(p, colour)["shipped colour step (spread stretched at most 5x)"]

    def band(arr):
        g = arr.astype(np.float32).mean(-1)
        return float((ndimage.gaussian_filter(g, 1.5) - ndimage.gaussian_filter(g, 4)).std() / (g.std() + 1e-6))

    own_band = [band(finish(transforms.resize_array(load_image(root / f), uncoloured))) for f in train]
    bccd_band = [band(finish(a)) for _, a in bccd]
    out += ["", "## Mid-scale band energy of the network's input (difference of Gaussians 1.5 / 4 over grey spread)",
            "", "| images | 10th | 50th | 90th percentile |", "|---|---|---|---|",
            f"| 400 wbc9 training crops | {' | '.join(f'{v:.3f}' for v in np.percentile(own_band, [10, 50, 90]))} |",
            f"| BCCD | {' | '.join(f'{v:.3f}' for v in np.percentile(bccd_band, [10, 50, 90]))} |", ""]
    target = REPO / "reports" / "probe-wbc9-sharpness.md"
    target.write_text("\n".join(out))
    print("\n".join(out))
    print(f"-> {target}")


if __name__ == "__main__":
    main()
