"""Could an input normalisation let cells learnt from all4 fields read C-NMC's cells? A cheap screen (no
fine-tuning): frozen ImageNet EfficientNet-Lite0 features of the cells that the all4 cell model scores
(``find_cells``), a logistic regression of malignant vs benign on the cells of all4-efficientnet_lite0-cells'
train split (each cell with its field's label), read as a per-field mean on that bundle's test split and per cell
on cnmc_sample (never fitted on). C-NMC cells are segmented onto black; variants that need the cell's own colours
use only its non-black pixels.

    python scripts/probes/probe_cnmc_frozen.py [--fields 400]

Variants: crop (as the cell model sees it); reinhard (Reinhard colour normalisation of the stained pixels' and
background's statistics, black excluded); isolated (all4 cells put on black like C-NMC's, by leukoview's own
segmentation); isolated+reinhard; grey (luminance, standardised on the non-black pixels); isolated+grey.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from leukoview.audits.wrongtask import isolated  # noqa: E402
from leukoview.models.transforms import cell_views  # noqa: E402
from leukoview.primitives import settings  # noqa: E402
from leukoview.primitives.augment import normalise_lab  # noqa: E402
from leukoview.primitives.images import find_images, load_image  # noqa: E402
from leukoview.primitives.metrics import roc_auc  # noqa: E402

SPEC = {"locate": {"method": "cells", "scale": 1.8, "max_cells": 6}}


def reinhard_unmasked(img: Image.Image) -> Image.Image:
    """Reinhard normalisation on the non-black pixels only (black stays black)."""
    arr = np.asarray(img)
    keep = arr.sum(2) > 30
    if keep.sum() < 16:
        return img
    strip = Image.fromarray(arr[keep][None])
    out = arr.copy()
    out[keep] = np.asarray(normalise_lab(strip))[0]
    return Image.fromarray(out)


def grey_unmasked(img: Image.Image) -> Image.Image:
    """Luminance only, its non-black pixels standardised to a fixed mean and spread (black stays black): what is
    left of a cell when its stain's hue and the scanner's brightness are taken away."""
    arr = np.asarray(img.convert("L"), np.float32)
    keep = np.asarray(img).sum(2) > 30
    out = np.zeros_like(arr)
    if keep.sum() >= 16:
        v = arr[keep]
        out[keep] = np.clip(128 + 40 * (v - v.mean()) / max(float(v.std()), 1.0), 1, 255)
    return Image.fromarray(out.astype(np.uint8)).convert("RGB")


def variant(img: Image.Image, name: str) -> Image.Image:
    if "isolated" in name:
        img = isolated(img)
    if "reinhard" in name:
        img = reinhard_unmasked(img)
    if "grey" in name:
        img = grey_unmasked(img)
    return img


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--fields", type=int, default=400, help="train fields (all4 train split, random)")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--variants", default="crop,reinhard,isolated,isolated+reinhard,grey,isolated+grey")
    ap.add_argument("--out", default="reports/probe-cnmc-frozen.md")
    args = ap.parse_args()
    import torch
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from probe_wbc9_inputs import embed

    torch.set_num_threads(2)
    root = Path(settings.data_root())
    split = pd.read_csv("models/all4-efficientnet_lite0-cells/split.csv")
    train = split[split.split == "train"].sample(args.fields, random_state=0)
    test = split[split.split == "test"].sample(min(200, int((split.split == "test").sum())), random_state=0)

    def cells_of(rows):
        crops, labels, owner = [], [], []
        for i, (f, lab) in enumerate(zip(rows.file, rows.label, strict=True)):
            _, views = cell_views(load_image(root / f), SPEC)
            crops += views
            labels += [int(lab != "Benign")] * len(views)
            owner += [i] * len(views)
        return crops, np.array(labels), np.array(owner)

    tr, te = cells_of(train), cells_of(test)
    cn_files = find_images(root / "cnmc_sample")
    cn_rows = pd.DataFrame({"file": [f.relative_to(root) for f in cn_files],
                            "label": ["B-ALL" if f.parent.name == "all" else "Benign" for f in cn_files]})
    cn = cells_of(cn_rows)
    y_cn = np.array([f.parent.name == "all" for f in cn_files], int)
    y_te = np.array([int(v != "Benign") for v in test.label])
    rows = []
    for v in args.variants.split(","):
        x_tr = embed([variant(c, v) for c in tr[0]], args.size)
        x_te = embed([variant(c, v) for c in te[0]], args.size)
        x_cn = embed([variant(c, v) for c in cn[0]], args.size)
        sc = StandardScaler().fit(x_tr)
        clf = LogisticRegression(C=0.1, max_iter=3000, class_weight="balanced").fit(sc.transform(x_tr), tr[1])
        s_te = clf.decision_function(sc.transform(x_te))
        field = np.array([s_te[te[2] == i].mean() for i in range(len(test))])
        s_cells = clf.decision_function(sc.transform(x_cn))
        s_cn = np.array([s_cells[cn[2] == i].mean() for i in range(len(cn_files))])
        row = {"variant": v, "train cells": len(tr[0]), "all4 test field AUC": round(roc_auc(y_te, field), 3),
               "C-NMC cell AUC": round(roc_auc(y_cn, s_cn), 3)}
        rows.append(row)
        print(row, flush=True)
    cols = list(rows[0])
    lines = ["Frozen ImageNet EfficientNet-Lite0 features of the cells find_cells gives, logistic regression on "
             f"{args.fields} all4 train fields' cells, {args.size} px; all4 test: {len(test)} fields (mean of "
             "cell scores); C-NMC: the 60 cnmc_sample cells (never fitted on). Written by "
             "scripts/probes/probe_cnmc_frozen.py.", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
